//! Holding real answers to the OpenAPI document: [`Contract`] finds the schema the document
//! declares for an operation's status and checks a body against it.
//!
//! The checker knows the subset of JSON Schema 2020-12 the document uses. It is stricter than
//! JSON Schema in two ways, both on purpose: a keyword it does not know fails the check (so
//! the document cannot grow a rule that nothing tests), and an object whose schema lists
//! `properties` without `additionalProperties` may hold no other keys (so an answer cannot
//! carry a field the document does not describe).

use serde_json::{json, Map, Value};

/// Keywords that describe and do not constrain.
const ANNOTATIONS: [&str; 8] = [
    "description",
    "title",
    "examples",
    "example",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// An OpenAPI document, and the checks of answers against it.
pub struct Contract {
    document: Value,
}

impl Contract {
    /// Wraps a document.
    pub fn new(document: Value) -> Self {
        Self { document }
    }

    /// The document.
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The operation for `method` (lower case) on the documented `path`, or a failed test.
    pub fn operation(&self, method: &str, path: &str) -> &Value {
        let operation = &self.document["paths"][path][method];
        assert!(
            operation.is_object(),
            "the document has no operation {method} {path}"
        );
        operation
    }

    /// The statuses the operation lists.
    pub fn statuses(&self, method: &str, path: &str) -> Vec<u16> {
        let responses = self.operation(method, path)["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} lists no responses"));
        responses
            .keys()
            .map(|k| {
                k.parse()
                    .unwrap_or_else(|_| panic!("{method} {path}: status {k:?} is not a number"))
            })
            .collect()
    }

    /// The operation's answer with `status` (a shared answer resolved), or a failed test.
    pub fn response(&self, method: &str, path: &str, status: u16) -> &Value {
        let response = &self.operation(method, path)["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{method} {path} does not list {status}"
        );
        self.resolve(response)
    }

    /// The JSON schema of the operation's answer with `status`, or `None` when the operation
    /// does not list that status.
    pub fn response_schema(&self, method: &str, path: &str, status: u16) -> Option<&Value> {
        let response = self.operation(method, path)["responses"].get(status.to_string())?;
        let response = self.resolve(response);
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {status}: no application/json schema in {response}"
        );
        Some(schema)
    }

    /// Fails the test unless the document lists `status` for the operation and `body` fits
    /// the schema it declares for that status.
    pub fn check(&self, method: &str, path: &str, (status, body): &(u16, Value)) {
        let Some(schema) = self.response_schema(method, path, *status) else {
            panic!(
                "{method} {path} answered {status}, which the document does not list (it lists {:?}): {body}",
                self.statuses(method, path)
            );
        };
        if let Err(errors) = self.validate(schema, body) {
            panic!(
                "{method} {path} {status}: the answer breaks the document's schema:\n  {}\nanswer: {body}",
                errors.join("\n  ")
            );
        }
    }

    /// Checks `value` against `schema`; every violation, each with where it is.
    pub fn validate(&self, schema: &Value, value: &Value) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        self.walk(schema, value, "$", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The target of a `$ref` (local references only), or the value itself.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.get("$ref") {
            Some(reference) => self.resolve(self.target(reference)),
            None => value,
        }
    }

    /// What a `$ref` points at in the document.
    fn target(&self, reference: &Value) -> &Value {
        let reference = reference.as_str().expect("a $ref is a string");
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references are supported: {reference}"));
        self.document
            .pointer(pointer)
            .unwrap_or_else(|| panic!("{reference} points at nothing"))
    }

    fn walk(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            match schema {
                Value::Bool(true) => {}
                Value::Bool(false) => errors.push(format!("{at}: no value is allowed here")),
                other => panic!("{at}: {other} is not a schema"),
            }
            return;
        };
        for (keyword, rule) in schema {
            match keyword.as_str() {
                "$ref" => self.walk(self.target(rule), value, at, errors),
                "type" => check_type(rule, value, at, errors),
                "enum" => {
                    let allowed = rule.as_array().expect("enum is an array");
                    if !allowed.contains(value) {
                        errors.push(format!("{at}: {value} is not one of {rule}"));
                    }
                }
                "const" => {
                    if rule != value {
                        errors.push(format!("{at}: {value} is not {rule}"));
                    }
                }
                "format" => check_format(rule, value, at, errors),
                "minimum" | "maximum" => check_bound(keyword, rule, value, at, errors),
                "minLength" | "maxLength" => check_length(keyword, rule, value, at, errors),
                "pattern" => check_pattern(rule, value, at, errors),
                "required" => {
                    if let Some(object) = value.as_object() {
                        for key in rule.as_array().expect("required is an array") {
                            let key = key.as_str().expect("required names are strings");
                            if !object.contains_key(key) {
                                errors.push(format!("{at}: {key} is missing"));
                            }
                        }
                    }
                }
                "properties" => {
                    if let Some(object) = value.as_object() {
                        self.check_properties(schema, rule, object, at, errors);
                    }
                }
                "additionalProperties" => {} // Checked with `properties`, or below.
                "propertyNames" => {
                    if let Some(object) = value.as_object() {
                        for key in object.keys() {
                            let name = Value::String(key.clone());
                            self.walk(rule, &name, &format!("{at}.{key} (name)"), errors);
                        }
                    }
                }
                "items" => {
                    if let Some(items) = value.as_array() {
                        for (i, item) in items.iter().enumerate() {
                            self.walk(rule, item, &format!("{at}[{i}]"), errors);
                        }
                    }
                }
                "oneOf" | "anyOf" | "allOf" => {
                    self.check_combination(keyword, rule, value, at, errors);
                }
                "discriminator" => self.check_discriminator(rule, value, at, errors),
                k if ANNOTATIONS.contains(&k) => {}
                other => panic!("{at}: the checker does not know the keyword {other:?}"),
            }
        }
        if !schema.contains_key("properties") {
            if let (Some(extra), Some(object)) =
                (schema.get("additionalProperties"), value.as_object())
            {
                for (key, item) in object {
                    self.walk(extra, item, &format!("{at}.{key}"), errors);
                }
            }
        }
    }

    fn check_properties(
        &self,
        schema: &Map<String, Value>,
        properties: &Value,
        object: &Map<String, Value>,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let properties = properties.as_object().expect("properties is an object");
        for (key, item) in object {
            let here = format!("{at}.{key}");
            match (properties.get(key), schema.get("additionalProperties")) {
                (Some(declared), _) => self.walk(declared, item, &here, errors),
                (None, Some(extra)) => self.walk(extra, item, &here, errors),
                (None, None) => errors.push(format!("{here}: not in the document")),
            }
        }
    }

    fn check_combination(
        &self,
        keyword: &str,
        options: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
    ) {
        let options = options.as_array().expect("a combination is an array");
        let results: Vec<Result<(), Vec<String>>> = options
            .iter()
            .map(|option| self.validate(option, value))
            .collect();
        let passed = results.iter().filter(|r| r.is_ok()).count();
        let ok = match keyword {
            "oneOf" => passed == 1,
            "anyOf" => passed >= 1,
            _ => passed == options.len(),
        };
        if !ok {
            let why: Vec<String> = results
                .into_iter()
                .filter_map(Result::err)
                .flatten()
                .collect();
            errors.push(format!(
                "{at}: {passed} of {} {keyword} options fit ({})",
                options.len(),
                why.join("; ")
            ));
        }
    }
}

impl Contract {
    /// An OpenAPI discriminator: the value of its property names, through its mapping, the
    /// schema the value must fit (the `oneOf` beside it checks the rest).
    fn check_discriminator(&self, rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(object) = value.as_object() else {
            return;
        };
        let property = rule["propertyName"]
            .as_str()
            .expect("a discriminator names its property");
        let Some(tag) = object.get(property).and_then(Value::as_str) else {
            errors.push(format!("{at}: {property} (the discriminator) is missing"));
            return;
        };
        match rule["mapping"].get(tag) {
            Some(reference) => self.walk(&json!({ "$ref": reference }), value, at, errors),
            None => errors.push(format!(
                "{at}: {property} {tag:?} is not in the discriminator's mapping"
            )),
        }
    }
}

fn type_fits(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

fn check_type(rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let fits = match rule {
        Value::String(name) => type_fits(name, value),
        Value::Array(names) => names
            .iter()
            .any(|n| type_fits(n.as_str().expect("type names are strings"), value)),
        other => panic!("{at}: type {other} is neither a name nor a list"),
    };
    if !fits {
        errors.push(format!("{at}: {value} is not of type {rule}"));
    }
}

fn check_format(rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let format = rule.as_str().expect("format is a string");
    let fits = match (format, value) {
        ("date-time", Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        ("uuid", Value::String(s)) => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        ("int32", v) if v.is_number() => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        ("int64", v) if v.is_number() => v.is_i64(),
        ("double" | "float", v) => v.is_number(),
        ("uri", Value::String(_)) => true, // Describes what requests send; answers hold none.
        // A format applies to its own type only; the type check speaks for the others.
        (_, Value::String(_)) | (_, Value::Number(_)) => {
            panic!("{at}: the checker does not know the format {format:?}")
        }
        _ => true,
    };
    if !fits {
        errors.push(format!("{at}: {value} is not a {format}"));
    }
}

fn check_bound(keyword: &str, rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let (Some(bound), Some(number)) = (rule.as_f64(), value.as_f64()) else {
        return;
    };
    let fits = if keyword == "minimum" {
        number >= bound
    } else {
        number <= bound
    };
    if !fits {
        errors.push(format!("{at}: {value} breaks {keyword} {rule}"));
    }
}

fn check_length(keyword: &str, rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(text) = value.as_str() else { return };
    let bound = rule.as_u64().expect("a length is a whole number");
    let length = text.chars().count() as u64;
    let fits = if keyword == "minLength" {
        length >= bound
    } else {
        length <= bound
    };
    if !fits {
        errors.push(format!("{at}: {value} breaks {keyword} {rule}"));
    }
}

/// A pattern of the document and the check it stands for.
type KnownPattern = (&'static str, fn(&str) -> bool);

/// The patterns the document uses (there is no regular expression engine here): a `user_id`
/// holds no control character.
const PATTERNS: [KnownPattern; 1] = [(justin_http::api_types::USER_ID_PATTERN, |s: &str| {
    !s.is_empty() && !s.chars().any(char::is_control)
})];

fn check_pattern(rule: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(text) = value.as_str() else { return };
    let pattern = rule.as_str().expect("a pattern is a string");
    let (_, fits) = PATTERNS
        .iter()
        .find(|(known, _)| *known == pattern)
        .unwrap_or_else(|| panic!("{at}: the checker does not know the pattern {pattern:?}"));
    if !fits(text) {
        errors.push(format!("{at}: {value} does not match {pattern}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn contract() -> Contract {
        Contract::new(json!({
            "components": {"schemas": {
                "State": {"type": "string", "enum": ["a", "b"]},
                "Thing": {
                    "type": "object",
                    "required": ["id", "n", "when", "state", "maybe"],
                    "properties": {
                        "id": {"type": "string", "format": "uuid"},
                        "user": {"type": "string", "pattern": justin_http::api_types::USER_ID_PATTERN},
                        "n": {"type": "integer", "minimum": 0, "maximum": 1},
                        "when": {"type": "string", "format": "date-time"},
                        "state": {"$ref": "#/components/schemas/State"},
                        "maybe": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/State"}]},
                        "list": {"type": "array", "items": {"type": "number"}},
                        "free": {"type": "object"}
                    }
                }
            }}
        }))
    }

    fn good() -> Value {
        json!({
            "id": "e999a61c-fb5c-4f01-9942-cb7dbe501013",
            "user": "test_user_123",
            "n": 1,
            "when": "2025-01-01T12:00:00Z",
            "state": "a",
            "maybe": null,
            "list": [1, 2.5],
            "free": {"anything": [true]}
        })
    }

    fn errors_for(body: Value) -> Vec<String> {
        let c = contract();
        let schema = json!({"$ref": "#/components/schemas/Thing"});
        c.validate(&schema, &body).err().unwrap_or_default()
    }

    #[test]
    fn a_body_that_fits_passes() {
        assert_eq!(errors_for(good()), Vec::<String>::new());
    }

    #[test]
    fn each_kind_of_wrong_body_is_rejected() {
        let cases = [
            ("id", Some(json!("not-a-uuid")), "is not a uuid"),
            ("n", Some(json!(2)), "breaks maximum"),
            ("n", Some(json!(0.5)), "is not of type"),
            ("when", Some(json!("yesterday")), "is not a date-time"),
            ("state", Some(json!("c")), "is not one of"),
            ("maybe", Some(json!(5)), "oneOf options fit"),
            ("list", Some(json!([1, "x"])), "is not of type"),
            ("free", Some(json!([])), "is not of type"),
            ("extra", Some(json!(1)), "not in the document"),
            ("id", None, "id is missing"),
            ("user", Some(json!("line\nbreak")), "does not match"),
        ];
        for (key, value, expected) in cases {
            let mut body = good();
            match value {
                Some(v) => body[key] = v,
                None => {
                    body.as_object_mut().unwrap().remove(key);
                }
            }
            let errors = errors_for(body);
            assert!(
                errors.iter().any(|e| e.contains(expected)),
                "{key}: expected an error containing {expected:?}, got {errors:?}"
            );
        }
    }

    #[test]
    fn a_discriminator_picks_the_schema_by_its_property() {
        let c = Contract::new(json!({"components": {"schemas": {
            "A": {"type": "object", "required": ["kind", "a"], "properties": {
                "kind": {"enum": ["a"]}, "a": {"type": "integer"}}},
            "B": {"type": "object", "required": ["kind"], "properties": {
                "kind": {"enum": ["b"]}}},
            "Either": {
                "oneOf": [{"$ref": "#/components/schemas/A"}, {"$ref": "#/components/schemas/B"}],
                "discriminator": {"propertyName": "kind", "mapping": {
                    "a": "#/components/schemas/A", "b": "#/components/schemas/B"}}
            }
        }}}));
        let either = json!({"$ref": "#/components/schemas/Either"});

        assert_eq!(c.validate(&either, &json!({"kind": "a", "a": 1})), Ok(()));
        assert_eq!(c.validate(&either, &json!({"kind": "b"})), Ok(()));
        let wrong = c.validate(&either, &json!({"kind": "c"})).unwrap_err();
        assert!(
            wrong
                .iter()
                .any(|e| e.contains("not in the discriminator's mapping")),
            "{wrong:?}"
        );
        let missing = c.validate(&either, &json!({"a": 1})).unwrap_err();
        assert!(
            missing.iter().any(|e| e.contains("is missing")),
            "{missing:?}"
        );
    }

    #[test]
    #[should_panic(expected = "does not know the keyword")]
    fn an_unknown_keyword_fails_rather_than_passes() {
        let c = contract();
        c.validate(&json!({"type": "string", "multipleOf": 2}), &json!("b"))
            .ok();
    }

    #[test]
    #[should_panic(expected = "does not know the pattern")]
    fn an_unknown_pattern_fails_rather_than_passes() {
        let c = contract();
        c.validate(&json!({"type": "string", "pattern": "^a"}), &json!("a"))
            .ok();
    }

    #[test]
    #[should_panic(expected = "which the document does not list")]
    fn an_unlisted_status_fails() {
        let c = Contract::new(json!({"paths": {"/x": {"get": {"responses": {
            "200": {"description": "", "content": {"application/json": {"schema": {"type": "object"}}}}
        }}}}}));
        c.check("get", "/x", &(500, json!({})));
    }
}
