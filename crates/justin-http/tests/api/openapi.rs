//! The OpenAPI document: the served one is the committed `docs/openapi.json`, it documents
//! every route with its security and headers, it is served without a key, what clients are
//! generated from says what the service does (free-form objects, optional fields that are
//! absent rather than null, the update's callback), and the service's real answers and
//! callbacks fit it.

use serde_json::{json, Value};

use crate::contract::Contract;
use crate::helpers::{
    action_body, spawn_app, spawn_app_with, upload_body, CallbackReceiver, Client, TestApp,
    TIMESTAMP, WAIT,
};

/// Where the committed document lives.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// Every operation the service mounts: method and documented path.
const OPERATIONS: [(&str, &str); 18] = [
    ("post", "/api/v1/add_user"),
    ("get", "/api/v1/users/{user_id}"),
    ("patch", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/users/{user_id}/withdraw"),
    ("post", "/api/v1/users/{user_id}/erase"),
    ("post", "/api/v1/host_decision"),
    ("post", "/api/v1/action"),
    ("post", "/api/v1/upload_data"),
    ("get", "/api/v1/users/{user_id}/decisions/{decision_idx}"),
    ("post", "/api/v1/update"),
    ("get", "/api/v1/update/{update_id}"),
    ("get", "/api/v1/parameters"),
    ("get", "/api/v1/parameters/{version}"),
    ("get", "/api/v1/export"),
    ("get", "/api/v1/monitor"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/healthz"),
    ("get", "/readyz"),
];

/// The operations that need no key even when keys are configured.
const OPEN: [&str; 3] = ["/healthz", "/readyz", "/api/v1/openapi.json"];

/// POST routes that read no body.
const WITHOUT_BODY: [&str; 1] = ["/api/v1/users/{user_id}/erase"];

/// Error answers that carry more than the envelope: (method, path, status, schema).
const RICHER_ERRORS: [(&str, &str, u16, &str); 1] = [(
    "post",
    "/api/v1/host_decision",
    409,
    "#/components/schemas/DecisionConflict",
)];

/// The document the app serves, checked against its own declaration.
pub fn served_contract(app: &TestApp) -> Contract {
    let got = app.get("/api/v1/openapi.json");
    assert_eq!(got.0, 200, "{}", got.1);
    let contract = Contract::new(got.1.clone());
    contract.check("get", "/api/v1/openapi.json", &got);
    contract
}

#[test]
fn the_committed_document_is_the_served_one() {
    let app = spawn_app();
    let (status, served) = app.get("/api/v1/openapi.json");
    let committed_text = std::fs::read_to_string(COMMITTED)
        .unwrap_or_else(|e| panic!("cannot read {COMMITTED} ({e}): run `make openapi`"));
    let committed: Value = serde_json::from_str(&committed_text)
        .unwrap_or_else(|e| panic!("{COMMITTED} is not JSON ({e}): run `make openapi`"));

    assert_eq!(status, 200, "{served}");
    assert!(
        committed == served,
        "docs/openapi.json differs from the document the service serves: run `make openapi` \
         and commit docs/openapi.json"
    );
    assert!(
        committed_text == justin_http::openapi::document_json().unwrap(),
        "docs/openapi.json is not formatted as `justin openapi` prints it: run `make openapi`"
    );
}

#[test]
fn the_document_is_served_without_a_key_when_keys_are_configured() {
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![justin_http::config::ApiKeyConfig {
            name: "study-app".into(),
            sha256: None,
            key: Some("study-app-key-0123456789".into()),
            access: justin_http::config::KeyAccess::Full,
        }];
    });
    let client = Client::new(app.base_url(), Some(WAIT));
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(COMMITTED).unwrap()).unwrap();

    let open = client.send("GET", "/api/v1/openapi.json", None, &[]);
    let wrong_key = client.send(
        "GET",
        "/api/v1/openapi.json",
        None,
        &[("Authorization", "Bearer not-a-key-of-this-service")],
    );
    let guarded = client.send("GET", "/api/v1/parameters", None, &[]);

    assert_eq!(open.status, 200, "{}", open.json);
    assert!(
        open.json == committed,
        "the served document is the committed one"
    );
    assert!(open.header("www-authenticate").is_none());
    assert!(open.header("x-request-id").is_some());
    assert_eq!(wrong_key.status, 200, "a key is not even looked at");
    assert_eq!(
        guarded.status, 401,
        "the rest of /api/v1 still needs the key"
    );
    assert_eq!(
        guarded.header("www-authenticate"),
        Some(r#"Bearer realm="justin""#)
    );
}

/// Free-form JSON objects, which generators must type as objects with any members (not as
/// empty objects): (schema, property).
const FREE_FORM: [(&str, &str); 5] = [
    ("ActionRequest", "context"),
    ("HostDecisionRequest", "context"),
    ("UploadedData", "context"),
    ("UploadedData", "outcome"),
    ("ParametersResponse", "parameters"),
];

#[test]
fn what_clients_are_generated_from_says_what_the_service_does() {
    let app = spawn_app();
    let contract = served_contract(&app);
    let doc = contract.document();
    let schemas = &doc["components"]["schemas"];

    for (schema, property) in FREE_FORM {
        let declared = &schemas[schema]["properties"][property];
        assert_eq!(
            (&declared["type"], &declared["additionalProperties"]),
            (&json!("object"), &json!(true)),
            "{schema}.{property}: {declared}"
        );
    }
    // A nullable reference carries its description itself, not inside a branch.
    let provenance = &schemas["UpdateStatusResponse"]["properties"]["provenance"];
    assert!(provenance["description"].is_string(), "{provenance}");
    for branch in provenance["oneOf"].as_array().unwrap() {
        assert!(branch.get("description").is_none(), "{provenance}");
    }
    // The callback of an update, with the model of what it sends.
    let callback = &contract.operation("post", "/api/v1/update")["callbacks"]["update_finished"]
        ["{$request.body#/callback_url}"]["post"];
    assert_eq!(
        callback["requestBody"]["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/UpdateCallback" }),
        "{callback}"
    );
    assert_eq!(
        schemas["UpdateCallback"]["discriminator"]["propertyName"],
        "status"
    );
}

/// Every schema an answer can reach, by name.
fn answer_schemas(contract: &Contract) -> Vec<String> {
    let doc = contract.document();
    let mut names: Vec<String> = Vec::new();
    let mut pending: Vec<Value> =
        vec![doc["paths"].clone(), doc["components"]["responses"].clone()];
    while let Some(value) = pending.pop() {
        match value {
            Value::Object(map) => {
                for (key, item) in map {
                    // Request bodies are requests; callbacks are the service's requests.
                    if key == "requestBody" || key == "callbacks" {
                        continue;
                    }
                    if let Some(name) = item
                        .as_str()
                        .filter(|_| key == "$ref")
                        .and_then(|r| r.strip_prefix("#/components/schemas/"))
                    {
                        if !names.iter().any(|n| n == name) {
                            names.push(name.to_owned());
                            pending.push(doc["components"]["schemas"][name].clone());
                        }
                    }
                    pending.push(item);
                }
            }
            Value::Array(items) => pending.extend(items),
            _ => {}
        }
    }
    names.sort();
    names
}

fn nullable(schema: &Value) -> bool {
    let in_type = match &schema["type"] {
        Value::Array(types) => types.contains(&json!("null")),
        other => *other == json!("null"),
    };
    let in_branch = schema["oneOf"]
        .as_array()
        .is_some_and(|branches| branches.iter().any(nullable));
    in_type || in_branch
}

#[test]
fn an_answer_field_is_either_optional_or_nullable_never_both() {
    let app = spawn_app();
    let contract = served_contract(&app);
    let schemas = &contract.document()["components"]["schemas"];
    let names = answer_schemas(&contract);

    assert!(names.contains(&"ActionResponse".to_owned()), "{names:?}");
    assert!(names.contains(&"FindingResponse".to_owned()), "{names:?}");
    assert!(!names.contains(&"ActionRequest".to_owned()), "{names:?}");
    let mut both = Vec::new();
    for name in &names {
        let schema = &schemas[name];
        let required = schema["required"].as_array().cloned().unwrap_or_default();
        for (property, declared) in schema["properties"].as_object().into_iter().flatten() {
            if nullable(declared) && !required.contains(&json!(property)) {
                both.push(format!("{name}.{property}"));
            }
        }
    }
    assert!(
        both.is_empty(),
        "optional answer fields are absent, never null; these are declared both: {both:?}"
    );
}

#[test]
fn every_route_is_documented_with_its_security_and_shared_answers() {
    let app = spawn_app();
    let contract = served_contract(&app);
    let doc = contract.document();

    assert_eq!(doc["openapi"], "3.1.0");
    assert!(
        doc["servers"][0]["url"].is_string(),
        "the document names a server: {}",
        doc["servers"]
    );
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    // The key when the service has keys, nothing when it has none.
    assert_eq!(doc["security"], json!([{ "bearer": [] }, {}]));
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let mut mounted: Vec<(String, String)> = OPERATIONS
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    documented.sort();
    mounted.sort();
    assert_eq!(
        documented, mounted,
        "documented operations vs mounted routes"
    );
    let mut ids = Vec::new();
    for (method, path) in OPERATIONS {
        let operation = contract.operation(method, path);
        let statuses = contract.statuses(method, path);
        ids.push(operation["operationId"].as_str().unwrap().to_owned());
        if OPEN.contains(&path) {
            assert!(
                operation["security"] == json!([]) && !statuses.contains(&401),
                "{method} {path} is open: {}",
                operation["security"]
            );
        } else {
            assert!(
                operation.get("security").is_none(),
                "{method} {path} takes the document's security"
            );
            assert!(statuses.contains(&401), "{method} {path}: {statuses:?}");
        }
        for status in &statuses {
            let headers = &contract.response(method, path, *status)["headers"];
            assert_eq!(
                headers["X-Request-Id"],
                json!({ "$ref": "#/components/headers/X-Request-Id" }),
                "{method} {path} {status} declares X-Request-Id"
            );
            assert_eq!(
                headers.get("WWW-Authenticate").is_some(),
                *status == 401,
                "{method} {path} {status}: WWW-Authenticate on a 401 only"
            );
        }
        if method == "post" && WITHOUT_BODY.contains(&path) {
            assert!(
                operation.get("requestBody").is_none(),
                "{path} reads no body"
            );
        } else if matches!(method, "post" | "patch") {
            assert_eq!(operation["requestBody"]["required"], true, "{path}");
            for status in [400, 413, 415] {
                assert!(statuses.contains(&status), "{path} lists {status}");
            }
        }
        if !matches!(path, "/healthz" | "/api/v1/openapi.json") {
            assert!(statuses.contains(&503), "{method} {path} lists 503");
        }
        for status in statuses.into_iter().filter(|s| *s >= 400) {
            let schema = contract.response_schema(method, path, status).unwrap();
            let expected = RICHER_ERRORS
                .iter()
                .find(|(m, p, s, _)| (*m, *p, *s) == (method, path, status))
                .map_or("#/components/schemas/ErrorResponse", |r| r.3);
            assert_eq!(
                schema,
                &json!({ "$ref": expected }),
                "{method} {path} {status} answers the error envelope"
            );
        }
    }
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count, "operation ids are unique: {ids:?}");
}

/// The request example the document shows for a POST route.
fn request_example(contract: &Contract, path: &str) -> Value {
    let schema =
        &contract.operation("post", path)["requestBody"]["content"]["application/json"]["schema"];
    let name = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
        .unwrap_or_else(|| panic!("{path}: the request body is a named schema: {schema}"));
    let component = &contract.document()["components"]["schemas"][name];
    let example = component["examples"][0].clone();
    assert!(example.is_object(), "{name} shows an example");
    contract
        .validate(component, &example)
        .unwrap_or_else(|e| panic!("{name}'s own example breaks it: {e:?}"));
    example
}

#[test]
fn the_documented_request_examples_are_accepted() {
    let app = spawn_app();
    let contract = served_contract(&app);
    // Uploading first would make the action example's decision a repeat: another study.
    let uploads = spawn_app();

    for (app, path, status) in [
        (&app, "/api/v1/add_user", 201),
        (&app, "/api/v1/action", 201),
        (&app, "/api/v1/host_decision", 201),
        (&app, "/api/v1/update", 202),
        (&uploads, "/api/v1/add_user", 201),
        (&uploads, "/api/v1/upload_data", 201),
    ] {
        let got = app.post_json(path, &request_example(&contract, path));

        assert_eq!(got.0, status, "{path}: {}", got.1);
        contract.check("post", path, &got);
    }
}

#[test]
fn real_answers_fit_the_document() {
    let app = spawn_app_with(|config| {
        config.backup.enabled = true;
        config.server.max_body_bytes = 4096;
        config.update.callback_attempts = 1;
    });
    let contract = served_contract(&app);
    let receiver = CallbackReceiver::failing_first(usize::MAX, 500);
    // Each call: what to send, the status it must get, the documented path it is checked at.
    let post = |path: &str, body: Value, status: u16| {
        let got = app.post_json(path, &body);
        assert_eq!(got.0, status, "POST {path} {body}: {}", got.1);
        contract.check("post", path, &got);
        got.1
    };
    let get = |path: &str, documented: &str, status: u16| {
        let got = app.get(path);
        assert_eq!(got.0, status, "GET {path}: {}", got.1);
        contract.check("get", documented, &got);
        got.1
    };

    get("/healthz", "/healthz", 200);
    get("/readyz", "/readyz", 200);

    post("/api/v1/add_user", json!({ "user_id": "u1" }), 201);
    post("/api/v1/add_user", json!({ "user_id": "u1" }), 400);
    post("/api/v1/add_user", json!({ "user_id": 5 }), 400);

    let decided = post("/api/v1/action", action_body("u1", 0, 23.5), 201);
    post("/api/v1/action", action_body("u1", 0, 23.5), 200);
    let mut typed = action_body("u1", 0, 23.5);
    typed["decision_type"] = json!("evening");
    typed["available"] = json!(false);
    typed["unavailable_reason"] = json!("driving");
    let unavailable = post("/api/v1/action", typed.clone(), 201);
    assert_eq!(unavailable["decision_type"], "evening", "{unavailable}");
    post("/api/v1/action", typed, 200);
    post("/api/v1/action", action_body("nobody", 0, 23.0), 404);
    post("/api/v1/action", json!({ "user_id": "u1" }), 400);
    post("/api/v1/action", action_body("u1", -1, 23.0), 400);
    let mut big = action_body("u1", 1, 23.0);
    big["context"]["padding"] = json!("x".repeat(8192));
    post("/api/v1/action", big, 413);
    let got = app.post_raw("/api/v1/action", "{}", "text/plain");
    assert_eq!(got.0, 415, "{}", got.1);
    contract.check("post", "/api/v1/action", &got);

    let mut upload = upload_body("u1", 0, 23.5);
    upload["data"]["action"] = json!(1 - decided["action"].as_i64().unwrap());
    post("/api/v1/upload_data", upload, 409);
    let mut upload = upload_body("u1", 0, 23.5);
    upload["data"]["action"] = decided["action"].clone();
    post("/api/v1/upload_data", upload.clone(), 201);
    post("/api/v1/upload_data", upload, 400);
    post("/api/v1/upload_data", upload_body("nobody", 0, 20.0), 404);
    let got = app.post_raw("/api/v1/upload_data", "[1]", "application/json");
    assert_eq!(got.0, 400, "{}", got.1);
    contract.check("post", "/api/v1/upload_data", &got);

    let accepted = post(
        "/api/v1/update",
        json!({ "timestamp": TIMESTAMP, "callback_url": receiver.url() }),
        202,
    );
    post(
        "/api/v1/update",
        json!({ "timestamp": TIMESTAMP, "callback_url": "ftp://x" }),
        400,
    );
    let id = accepted["update_id"].as_str().unwrap();
    // Whatever state the first look finds (often still processing, with its nulls).
    get(
        &format!("/api/v1/update/{id}"),
        "/api/v1/update/{update_id}",
        200,
    );
    let callback = receiver.next();
    let done = app.wait_for_update(id, |b| b["callback"]["status"] != "pending");
    contract.check("get", "/api/v1/update/{update_id}", &(200, done.clone()));
    assert_eq!(done["update_status"], "completed", "{done}");
    assert_eq!(done["callback"]["status"], "failed", "{done}");
    assert!(done["provenance"]["backup_file"].is_string(), "{done}");
    get("/api/v1/update/nope", "/api/v1/update/{update_id}", 400);
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], id, "{callback}");
    check_callback(&contract, &callback);
    get(
        "/api/v1/update/e999a61c-fb5c-4f01-9942-cb7dbe501013",
        "/api/v1/update/{update_id}",
        404,
    );

    get("/api/v1/parameters", "/api/v1/parameters", 200);
    get("/api/v1/parameters/2", "/api/v1/parameters/{version}", 200);
    get("/api/v1/parameters/x", "/api/v1/parameters/{version}", 400);
    get("/api/v1/parameters/99", "/api/v1/parameters/{version}", 404);
}

#[test]
fn a_failed_update_fits_the_document() {
    // The backup, which comes first, cannot be written: backup.dir is a regular file.
    let app = spawn_app_with(|config| {
        let file = config.backup.dir.join("not-a-directory");
        std::fs::write(&file, "a regular file where a directory should be").unwrap();
        config.backup.enabled = true;
        config.backup.dir = file;
    });
    let contract = served_contract(&app);
    let receiver = CallbackReceiver::start();

    let id = app.request_update(receiver.url());
    let callback = receiver.next();
    let failed = app.wait_for_update(&id, |b| b["callback"]["status"] != "pending");

    assert_eq!(failed["update_status"], "failed", "{failed}");
    assert_eq!(
        callback,
        json!({ "status": "failed", "update_id": id, "message": "Model update failed." })
    );
    check_callback(&contract, &callback);
    assert_eq!(failed["provenance"], Value::Null, "{failed}");
    contract.check("get", "/api/v1/update/{update_id}", &(200, failed));
}

/// Fails the test unless `body` fits the callback the document declares for an update.
fn check_callback(contract: &Contract, body: &Value) {
    let schema = &contract.operation("post", "/api/v1/update")["callbacks"]["update_finished"]
        ["{$request.body#/callback_url}"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    if let Err(errors) = contract.validate(schema, body) {
        panic!(
            "the callback breaks the document's schema:\n  {}\ncallback: {body}",
            errors.join("\n  ")
        );
    }
}
