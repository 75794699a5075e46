//! CSV in PostgreSQL's `COPY ... (FORMAT csv)` dialect, the format of backup files: fields
//! separated by commas, records ended by `\n`, a field quoted with `"` (a quote doubled inside)
//! when it is empty or holds a comma, quote, line break or backslash, and NULL written as an
//! empty unquoted field. So a quoted empty field is the empty string and an unquoted one is
//! NULL, a distinction ordinary CSV libraries drop, hence this small module.
//!
//! It also holds what reads a backup's CSV without parsing it: the header line and a record
//! counter that passes bytes through (an adapter whose database writes the CSV itself, like
//! PostgreSQL's `COPY`, only needs to count).

use std::io::{self, BufRead, Read, Write};

/// One field as written or read: `None` is SQL NULL.
pub type Field = Option<String>;

/// Writes one record.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_record(out: &mut impl Write, fields: &[Field]) -> io::Result<()> {
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
        // Each quote doubled, written piece by piece rather than through a copy of the text.
        let mut pieces = text.split('"');
        if let Some(first) = pieces.next() {
            out.write_all(first.as_bytes())?;
        }
        for piece in pieces {
            out.write_all(b"\"\"")?;
            out.write_all(piece.as_bytes())?;
        }
        out.write_all(b"\"")
    } else {
        out.write_all(text.as_bytes())
    }
}

/// A float as PostgreSQL reads (and Rust reads back) a `DOUBLE PRECISION`: the shortest text
/// that round-trips, with PostgreSQL's names for the values that are not finite.
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{v:?}")
    }
}

/// A boolean as PostgreSQL writes it.
pub fn bool_text(v: bool) -> String {
    if v { "t" } else { "f" }.into()
}

/// Reads records one at a time; a record may span lines inside a quoted field.
pub struct CsvReader<R> {
    inner: R,
    /// Bytes consumed so far.
    pub bytes: u64,
}

impl<R: BufRead> CsvReader<R> {
    /// A reader of the records in `inner`, which starts at a record (after any header).
    pub fn new(inner: R) -> Self {
        Self { inner, bytes: 0 }
    }

    /// The next record, `None` at the end of the data.
    ///
    /// # Errors
    /// I/O errors as such; malformed CSV as [`io::ErrorKind::InvalidData`].
    pub fn next_record(&mut self) -> io::Result<Option<Vec<Field>>> {
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

/// Longest CSV header line accepted.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// A CSV's header line.
#[derive(Debug)]
pub struct Header {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// The bytes of the line, its line end included.
    pub bytes: u64,
}

/// Why a header line could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// Reading failed.
    Io(io::Error),
    /// The line is missing or not text; the reason names the file.
    Invalid(String),
}

/// Reads the header line of the CSV `name`. Column names are plain identifiers, which CSV
/// leaves unquoted, so a header is one line split at commas.
///
/// # Errors
/// [`HeaderError::Io`] when reading fails; [`HeaderError::Invalid`] when there is no complete
/// line within 64 KiB or it is not UTF-8.
pub fn read_header(reader: &mut impl BufRead, name: &str) -> Result<Header, HeaderError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(HeaderError::Io)?;
    if line.last() != Some(&b'\n') {
        return Err(HeaderError::Invalid(format!("{name} has no header line")));
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| HeaderError::Invalid(format!("{name}: the header is not UTF-8")))?;
    Ok(Header {
        columns: header_columns(text),
        bytes: line.len() as u64,
    })
}

/// The column names of a header line (its line end, if any, ignored).
pub fn header_columns(line: &str) -> Vec<String> {
    line.trim_end_matches(['\r', '\n'])
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// Passes CSV through and counts its records: line ends outside quoted fields. PostgreSQL
/// quotes with `"` and escapes a quote by doubling it, so toggling on every `"` tracks
/// whether a newline is inside a field.
pub struct RecordCounter<W> {
    inner: W,
    in_quotes: bool,
    /// Records ended by a newline so far.
    pub records: u64,
    /// Whether bytes follow the last record's newline (a last record without one).
    partial: bool,
    /// Bytes passed through.
    pub bytes: u64,
}

impl<W: Write> RecordCounter<W> {
    /// A counter that passes everything on to `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            in_quotes: false,
            records: 0,
            partial: false,
            bytes: 0,
        }
    }

    /// The number of records in everything written, counting a last record that lacks its
    /// newline (COPY accepts one).
    ///
    /// # Errors
    /// A reason when the data ends inside a quoted field.
    pub fn total(&self) -> Result<u64, &'static str> {
        if self.in_quotes {
            Err("the data ends inside a quoted field")
        } else {
            Ok(self.records + u64::from(self.partial))
        }
    }
}

impl<W: Write> Write for RecordCounter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        for &byte in &buf[..written] {
            match byte {
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    self.partial = true;
                }
                b'\n' if !self.in_quotes => {
                    self.records += 1;
                    self.partial = false;
                }
                _ => self.partial = true,
            }
        }
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
    fn record_counter_ignores_newlines_inside_quotes() {
        let csv = b"1,plain\n2,\"two\nlines\"\n3,\"say \"\"hi\"\"\n\"\n";
        let mut out = Vec::new();
        let mut counter = RecordCounter::new(&mut out);
        // Written in small pieces, as io::copy may.
        for chunk in csv.chunks(3) {
            counter.write_all(chunk).unwrap();
        }
        assert_eq!(counter.records, 3);
        assert_eq!(counter.total(), Ok(3));
        assert_eq!(counter.bytes, csv.len() as u64);
        assert_eq!(out, csv);
    }

    #[test]
    fn record_counter_counts_a_last_record_without_newline_and_refuses_open_quotes() {
        let mut counter = RecordCounter::new(io::sink());
        counter.write_all(b"1,a\n2,b").unwrap();
        assert_eq!(counter.total(), Ok(2));
        let mut open = RecordCounter::new(io::sink());
        open.write_all(b"1,\"a\n").unwrap();
        assert!(open.total().is_err());
    }

    #[test]
    fn a_header_is_one_complete_utf8_line() {
        let header = read_header(&mut &b"a,b\r\n1,2\n"[..], "t.csv").unwrap();
        assert_eq!(header.columns, vec!["a", "b"]);
        assert_eq!(header.bytes, 5);
        for bad in [&b""[..], b"a,b", b"\xff\n"] {
            assert!(
                matches!(
                    read_header(&mut &bad[..], "t.csv"),
                    Err(HeaderError::Invalid(_))
                ),
                "{bad:?}"
            );
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
