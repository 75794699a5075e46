// Every request of the README, typed with the TypeScript types openapi-typescript generates
// from docs/openapi.json. `make clients` generates them into target/clients/typescript/justin.ts
// and runs `tsc --strict --noEmit` on this file (clients/tsconfig.json), so a document change
// that breaks what the README shows breaks CI. Nothing here runs: the Python study in
// study_flow.py talks to a real service.
//
// The `@ts-expect-error` lines are checks too: tsc fails when the error they expect is gone.

import type { components, paths } from "../target/clients/typescript/justin";

type Schemas = components["schemas"];

/** The routes that take a JSON body with POST. */
type PostPath = {
  [P in keyof paths]: paths[P] extends { post: { requestBody?: unknown } } ? P : never;
}[keyof paths];

/** The JSON body a POST route takes. */
type Body<P extends PostPath> = paths[P]["post"] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;

/** The JSON answer of `method path` with `status`. */
type Answer<
  P extends keyof paths,
  M extends "get" | "post",
  S extends number,
> = paths[P][M] extends { responses: { [K in S]: { content: { "application/json": infer A } } } }
  ? A
  : never;

const BASE = "http://127.0.0.1:5000";

/** JSON headers, with the key when the service has keys (a service without keys needs none). */
function headers(key?: string): Record<string, string> {
  const json = { "Content-Type": "application/json" };
  return key === undefined ? json : { ...json, Authorization: `Bearer ${key}` };
}

async function post<P extends PostPath>(path: P, body: Body<P>, key?: string): Promise<Response> {
  return fetch(`${BASE}${path}`, { method: "POST", headers: headers(key), body: JSON.stringify(body) });
}

async function get(path: string, key?: string): Promise<Response> {
  return fetch(`${BASE}${path}`, { headers: headers(key) });
}

export async function readme(key?: string): Promise<void> {
  // Register a participant (201).
  const added = await post("/api/v1/add_user", { user_id: "test_user_123" }, key);
  const registered: Answer<"/api/v1/add_user", "post", 201> = await added.json();
  console.log(registered.user_id);

  // Ask for an action at a decision time (201, or 200 for a repeat).
  const asked = await post(
    "/api/v1/action",
    {
      user_id: "test_user_123",
      timestamp: "2025-01-01T12:00:00Z",
      decision_idx: 0,
      context: { temperature: 23 },
    },
    key,
  );
  const decision: Schemas["ActionResponse"] = await asked.json();
  // Optional answer fields are absent or set, never null.
  const available: boolean = decision.available ?? true;
  console.log(decision.action, decision.action_prob, decision.state, available);

  // A participant who cannot be randomized now, at an evening decision point.
  await post(
    "/api/v1/action",
    {
      user_id: "test_user_123",
      timestamp: "2025-01-01T20:00:00Z",
      decision_idx: 3,
      decision_type: "evening",
      available: false,
      unavailable_reason: "driving",
      context: {},
    },
    key,
  );

  // Upload what happened after a decision (201; 409 when it contradicts the decision).
  const uploaded = await post(
    "/api/v1/upload_data",
    {
      user_id: "test_user_123",
      timestamp: "2025-01-01T12:00:00Z",
      decision_idx: 0,
      data: {
        context: { temperature: 30 },
        action: decision.action,
        action_prob: decision.action_prob,
        state: [30],
        outcome: { clicks: 4 },
      },
    },
    key,
  );
  if (uploaded.status === 409) {
    const refusal: Answer<"/api/v1/upload_data", "post", 409> = await uploaded.json();
    console.log(refusal.message);
  }

  // Ask for a model update (202); its outcome is POSTed to callback_url.
  const requested = await post(
    "/api/v1/update",
    { timestamp: "2025-01-01T12:00:00Z", callback_url: "http://example.com/callback" },
    key,
  );
  const accepted: Answer<"/api/v1/update", "post", 202> = await requested.json();

  // Beyond the template.
  const status: Answer<"/api/v1/update/{update_id}", "get", 200> = await (
    await get(`/api/v1/update/${accepted.update_id}`, key)
  ).json();
  const version: number | null = status.parameter_version;
  const rows: number | undefined = status.provenance?.rows_read;
  console.log(status.update_status, status.callback.status, version, rows);
  const current: Answer<"/api/v1/parameters", "get", 200> = await (
    await get("/api/v1/parameters", key)
  ).json();
  const first: Answer<"/api/v1/parameters/{version}", "get", 200> = await (
    await get("/api/v1/parameters/1", key)
  ).json();
  const probability: unknown = current.parameters["probability_of_action"];
  console.log(probability, first.version);
  const live: Answer<"/healthz", "get", 200> = await (await get("/healthz")).json();
  const ready: Answer<"/readyz", "get", 200> = await (await get("/readyz")).json();
  console.log(live.status, ready.status);
  const table: string = await (await get("/api/v1/export", key)).text();
  console.log(table.split("\n").length);
  // GET /metrics answers the Prometheus text format, which the document leaves out.
}

/** A study server's callback receiver: the body the service POSTs to callback_url. */
export function onUpdateFinished(body: Schemas["UpdateCallback"]): string {
  switch (body.status) {
    case "completed":
      return `update ${body.update_id} completed at ${body.timestamp}`;
    case "failed":
      return `update ${body.update_id} failed: ${body.message}`;
    default: {
      const never: never = body;
      return never;
    }
  }
}

// What the types refuse.
export const refused: Schemas["ActionRequest"][] = [
  // @ts-expect-error available is a boolean (the service answers 400 to "").
  { user_id: "u", timestamp: "2025-01-01", decision_idx: 0, context: {}, available: "" },
  // @ts-expect-error context is required.
  { user_id: "u", timestamp: "2025-01-01", decision_idx: 0 },
];
export const neverNull: Schemas["ActionResponse"] = {
  action: 0,
  action_prob: 0.5,
  // @ts-expect-error an absent answer field is left out, never null.
  available: null,
  state: [],
  status: "success",
  timestamp: "2025-01-01T12:00:00.000000Z",
  user_id: "u",
};
