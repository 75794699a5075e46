//! CSV in PostgreSQL's `COPY ... (FORMAT csv)` dialect, the format of backup files: fields
//! separated by commas, records ended by `\n`, a field quoted with `"` (a quote doubled inside)
//! when it is empty or holds a comma, quote, line break or backslash, and NULL written as an
//! empty unquoted field. So a quoted empty field is the empty string and an unquoted one is
//! NULL, a distinction ordinary CSV libraries drop, hence this small module.

use std::io::{self, BufRead, Write};

/// One field as written or read: `None` is SQL NULL.
pub(crate) type Field = Option<String>;

/// Writes one record.
pub(crate) fn write_record(out: &mut impl Write, fields: &[Field]) -> io::Result<()> {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        if let Some(text) = field {
            write_field(out, text)?;
        }
    }
    out.write_all(b"\n")
}

fn write_field(out: &mut impl Write, text: &str) -> io::Result<()> {
    // PostgreSQL also quotes `\.`, its end-of-data marker; quoting any backslash covers it.
    let needs_quotes = text.is_empty()
        || text
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r' | b'\\'));
    if needs_quotes {
        out.write_all(b"\"")?;
        out.write_all(text.replace('"', "\"\"").as_bytes())?;
        out.write_all(b"\"")
    } else {
        out.write_all(text.as_bytes())
    }
}

/// A float as PostgreSQL reads (and Rust reads back) a `DOUBLE PRECISION`: the shortest text
/// that round-trips, with PostgreSQL's names for the values that are not finite.
pub(crate) fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:?}")
    }
}

/// A boolean as PostgreSQL writes it.
pub(crate) fn bool_text(v: bool) -> String {
    if v { "t" } else { "f" }.into()
}

/// Reads records one at a time; a record may span lines inside a quoted field.
pub(crate) struct CsvReader<R> {
    inner: R,
    /// Bytes consumed so far.
    pub(crate) bytes: u64,
}

impl<R: BufRead> CsvReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, bytes: 0 }
    }

    /// The next record, `None` at the end of the data.
    ///
    /// # Errors
    /// I/O errors as such; malformed CSV as [`io::ErrorKind::InvalidData`].
    pub(crate) fn next_record(&mut self) -> io::Result<Option<Vec<Field>>> {
        let mut buf = Vec::new();
        let mut quotes = 0usize;
        loop {
            let start = buf.len();
            let n = self.inner.read_until(b'\n', &mut buf)?;
            self.bytes += n as u64;
            if n == 0 {
                if buf.is_empty() {
                    return Ok(None);
                }
                if quotes % 2 == 1 {
                    return Err(invalid("the data ends inside a quoted field"));
                }
                break;
            }
            quotes += buf[start..].iter().filter(|&&b| b == b'"').count();
            // An even number of quotes so far: the newline is outside any quoted field.
            if quotes.is_multiple_of(2) {
                break;
            }
        }
        parse_record(&buf).map(Some)
    }
}

fn invalid(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

fn parse_record(line: &[u8]) -> io::Result<Vec<Field>> {
    let mut end = line.len();
    if line[..end].ends_with(b"\n") {
        end -= 1;
        if line[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    let b = &line[..end];
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| invalid("a field is not valid UTF-8"))
    };
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut value = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(invalid("a quoted field is not closed")),
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => {
                        value.push(b'"');
                        i += 2;
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            fields.push(Some(text(value)?));
        } else {
            let start = i;
            while i < b.len() && b[i] != b',' {
                if b[i] == b'"' {
                    return Err(invalid("a quote inside an unquoted field"));
                }
                i += 1;
            }
            let value = &b[start..i];
            fields.push(if value.is_empty() {
                None
            } else {
                Some(text(value.to_vec())?)
            });
        }
        match b.get(i) {
            None => return Ok(fields),
            Some(b',') => i += 1,
            Some(_) => return Err(invalid("text after a closing quote")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(fields: &[Field]) -> String {
        let mut out = Vec::new();
        write_record(&mut out, fields).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn null_empty_and_special_text_are_written_as_postgres_does() {
        let fields = vec![
            Some("plain".to_owned()),
            None,
            Some(String::new()),
            Some("a,b".into()),
            Some("say \"hi\"\nnext".into()),
            Some(r"\.".into()),
        ];
        let line = written(&fields);
        assert_eq!(
            line,
            "plain,,\"\",\"a,b\",\"say \"\"hi\"\"\nnext\",\"\\.\"\n"
        );
        let mut reader = CsvReader::new(line.as_bytes());
        assert_eq!(reader.next_record().unwrap(), Some(fields));
        assert_eq!(reader.next_record().unwrap(), None);
        assert_eq!(reader.bytes, line.len() as u64);
    }

    #[test]
    fn a_trailing_null_and_a_last_record_without_newline_are_read() {
        let mut reader = CsvReader::new(&b"1,\n2,x"[..]);
        assert_eq!(
            reader.next_record().unwrap(),
            Some(vec![Some("1".into()), None])
        );
        assert_eq!(
            reader.next_record().unwrap(),
            Some(vec![Some("2".into()), Some("x".into())])
        );
        assert_eq!(reader.next_record().unwrap(), None);
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [&b"\"open\n"[..], b"\"a\"b\n", b"a\"b\n"] {
            assert!(CsvReader::new(bad).next_record().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn floats_round_trip_and_name_what_is_not_finite() {
        for v in [0.5, 1.0 / 3.0, 1e-300, -2.5e20, 0.0] {
            assert_eq!(float_text(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(float_text(f64::INFINITY), "Infinity");
        assert_eq!(float_text(f64::NAN), "NaN");
        assert_eq!(bool_text(true), "t");
    }
}
