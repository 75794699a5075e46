//! The OpenAPI document: the served one is the committed `docs/openapi.json`, it documents
//! every route with its security, and the service's real answers fit it.

use serde_json::{json, Value};

use crate::contract::Contract;
use crate::helpers::{
    action_body, spawn_app, spawn_app_with, upload_body, CallbackReceiver, TestApp, TIMESTAMP,
};

/// Where the committed document lives.
const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

/// Every operation the service mounts: method and documented path.
const OPERATIONS: [(&str, &str); 17] = [
    ("post", "/api/v1/add_user"),
    ("get", "/api/v1/users/{user_id}"),
    ("patch", "/api/v1/users/{user_id}"),
    ("post", "/api/v1/users/{user_id}/withdraw"),
    ("post", "/api/v1/users/{user_id}/erase"),
    ("post", "/api/v1/host_decision"),
    ("post", "/api/v1/action"),
    ("post", "/api/v1/upload_data"),
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
fn every_route_is_documented_with_its_security_and_shared_answers() {
    let app = spawn_app();
    let contract = served_contract(&app);
    let doc = contract.document();

    assert_eq!(doc["openapi"], "3.1.0");
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
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
        if path.starts_with("/api/v1/") {
            assert_eq!(
                operation["security"],
                json!([{ "bearer": [] }]),
                "{method} {path} needs the bearer key"
            );
            assert!(statuses.contains(&401), "{method} {path}: {statuses:?}");
        } else {
            assert!(
                operation.get("security").is_none() && !statuses.contains(&401),
                "{method} {path} is open"
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
    receiver.next();
    let done = app.wait_for_update(id, |b| b["callback"]["status"] != "pending");
    contract.check("get", "/api/v1/update/{update_id}", &(200, done.clone()));
    assert_eq!(done["update_status"], "completed", "{done}");
    assert_eq!(done["callback"]["status"], "failed", "{done}");
    assert!(done["provenance"]["backup_file"].is_string(), "{done}");
    get("/api/v1/update/nope", "/api/v1/update/{update_id}", 400);
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
    receiver.next();
    let failed = app.wait_for_update(&id, |b| b["callback"]["status"] != "pending");

    assert_eq!(failed["update_status"], "failed", "{failed}");
    assert_eq!(failed["provenance"], Value::Null, "{failed}");
    contract.check("get", "/api/v1/update/{update_id}", &(200, failed));
}
