//! Property tests of the request body reader ([`crate::body::json_object`]) for numbers: every
//! finite double, written the ways clients and databases write it, is read as that very double,
//! bit for bit (the sign of zero included).

use actix_web::{http::header, test::TestRequest, FromRequest};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use crate::body::JsonBody;

/// Values at the edges of the format, and ones whose shortest text has 17 digits.
const SPECIAL: [f64; 16] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    // The largest subnormal.
    f64::from_bits(0x000f_ffff_ffff_ffff),
    f64::MAX,
    -f64::MAX,
    1e-300,
    1e300,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    13.306_201_483_010_007,
    0.1,
    -123_456_789.012_345_68,
];

/// Any finite double: a uniform draw over all bit patterns reaches every exponent (subnormals
/// included) and both signs, proptest's float classes bias towards ordinary values, and the
/// special values are always tried.
fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("finite", |v| v.is_finite()),
        proptest::num::f64::POSITIVE
            | proptest::num::f64::NEGATIVE
            | proptest::num::f64::NORMAL
            | proptest::num::f64::SUBNORMAL
            | proptest::num::f64::ZERO,
        proptest::sample::select(SPECIAL.to_vec()),
    ]
}

/// `v` as Python's `repr` (and so `json.dumps`) writes it: the shortest digits that read back
/// as `v`, positional from 1e-4 up to 1e16 (with `.0` when whole), otherwise in scientific
/// notation with a signed exponent of at least two digits.
fn python_repr(v: f64) -> String {
    // Rust's `{:e}` gives the same shortest digits: `-1.2345e-7`, `5e-324`, `-0e0`.
    let sci = format!("{v:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap();
    let exponent: i32 = exponent.parse().unwrap();
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exponent) {
        let point = exponent + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            let (whole, fraction) = digits.split_at(point as usize);
            format!("{whole}.{fraction}")
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!(
            "{sign}{first}{rest}e{exp_sign}{:02}",
            exponent.unsigned_abs()
        )
    }
}

/// The texts of `v` a request can carry: Python's, serde_json's (Rust clients), every digit
/// written out (as PostgreSQL prints a `numeric`, 1e300 as 301 digits), and 17 significant
/// digits, which are enough for any double but usually not the shortest.
fn texts(v: f64) -> [String; 4] {
    [
        python_repr(v),
        serde_json::to_string(&v).unwrap(),
        format!("{v}"),
        format!("{v:.16e}"),
    ]
}

/// Reads `body` as the POST handlers do.
fn read(runtime: &actix_web::rt::SystemRunner, body: String) -> Result<Value, String> {
    let (request, mut payload) = TestRequest::post()
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body)
        .to_http_parts();
    runtime
        .block_on(JsonBody::from_request(&request, &mut payload))
        .map(|JsonBody(object, _)| Value::Object(object))
        .map_err(|e| e.to_string())
}

fn same_bits(read: &Value, sent: f64, text: &str) -> Result<(), TestCaseError> {
    let got = read
        .as_f64()
        .ok_or_else(|| TestCaseError::fail(format!("{text} was read as {read}")))?;
    prop_assert_eq!(
        got.to_bits(),
        sent.to_bits(),
        "{} was read as {:?}, not {:?}",
        text,
        got,
        sent
    );
    Ok(())
}

#[test]
fn python_repr_matches_python() {
    for (v, python) in [
        (13.306_201_483_010_007, "13.306201483010007"),
        (1e16, "1e+16"),
        (1e15, "1000000000000000.0"),
        (0.0001, "0.0001"),
        (0.000_01, "1e-05"),
        (-0.0, "-0.0"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (-1.5e-7, "-1.5e-07"),
        (123.0, "123.0"),
    ] {
        assert_eq!(python_repr(v), python);
    }
}

#[test]
fn every_finite_double_is_read_bit_for_bit_in_every_form() {
    let runtime = actix_web::rt::System::new();
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&finite(), |v| {
            for text in texts(v) {
                let body = format!(r#"{{"context": {{"x": {text}}}, "state": [{text}]}}"#);
                let object = read(&runtime, body).map_err(TestCaseError::fail)?;
                same_bits(&object["context"]["x"], v, &text)?;
                same_bits(&object["state"][0], v, &text)?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_special_values_are_read_bit_for_bit() {
    let runtime = actix_web::rt::System::new();
    for v in SPECIAL {
        for text in texts(v) {
            let object = read(&runtime, format!(r#"{{"x": {text}}}"#)).unwrap();
            same_bits(&object["x"], v, &text).unwrap();
        }
    }
    // Between two doubles, a text is read as the nearer one (the even one on a tie): 2^53 + 1
    // is halfway between 2^53 and 2^53 + 2.
    let object = read(&runtime, r#"{"x": 9007199254740993.0}"#.into()).unwrap();
    same_bits(&object["x"], 9_007_199_254_740_992.0, "2^53 + 1").unwrap();
}
