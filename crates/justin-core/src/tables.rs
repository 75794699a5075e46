//! The tables of a study's store, by the names the storage port reports them under:
//! [`Store::row_counts`](crate::Store::row_counts), backups and restores list them (and the
//! conformance suite checks those names), and [`Store::reset`](crate::Store::reset) empties
//! them. Every adapter stores a study in these tables, whatever its SQL dialect; how an
//! adapter creates, copies or empties them stays its own.

use crate::ports::StoreError;

/// The tables of a study, in the order reports and backups list them, which is also an order
/// foreign keys allow rows to be inserted in (restore relies on it).
pub const TABLES: [&str; 9] = [
    "users",
    "model_parameters",
    "actions",
    "study_data",
    "model_update_requests",
    "update_provenance",
    "participant_events",
    "erasures",
    "study_data_corrections",
];

/// One statement counting the rows of every table of [`TABLES`], as rows of `name` (text) and
/// `rows` (a 64-bit integer), in SQL that PostgreSQL and SQLite both run. One statement, so
/// the counts come from one snapshot.
pub fn count_rows_statement() -> String {
    TABLES
        .iter()
        .map(|t| format!("SELECT '{t}' AS name, count(*) AS rows FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The `(name, rows)` rows [`count_rows_statement`] returned, as the port reports them: in
/// [`TABLES`] order (SQL does not promise that `UNION ALL` keeps its branches' order).
///
/// # Errors
/// [`StoreError::Other`] for a negative count.
pub fn in_table_order(
    counts: impl IntoIterator<Item = (String, i64)>,
) -> Result<Vec<(String, u64)>, StoreError> {
    let mut counts: Vec<(String, i64)> = counts.into_iter().collect();
    counts.sort_by_key(|(name, _)| TABLES.iter().position(|t| t == name));
    counts
        .into_iter()
        .map(|(name, rows)| {
            let rows = u64::try_from(rows).map_err(|e| StoreError::Other(Box::new(e)))?;
            Ok((name, rows))
        })
        .collect()
}

/// Adds the corrections an erasure deleted to its audit record's `row_counts`, after
/// `study_data`, when there were any: the record of a participant without corrections reads as
/// it did before corrections existed.
pub fn count_erased_corrections(row_counts: &mut Vec<(String, u64)>, corrections: u64) {
    if corrections > 0 {
        let at = row_counts
            .iter()
            .position(|(table, _)| table == "study_data")
            .map_or(row_counts.len(), |i| i + 1);
        row_counts.insert(at, ("study_data_corrections".to_owned(), corrections));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_counts_every_table_by_name() {
        let sql = count_rows_statement();

        for table in TABLES {
            assert!(
                sql.contains(&format!(
                    "SELECT '{table}' AS name, count(*) AS rows FROM {table}"
                )),
                "{sql}"
            );
        }
        assert_eq!(sql.matches(" UNION ALL ").count(), TABLES.len() - 1);
    }

    #[test]
    fn counts_are_listed_in_table_order() {
        let returned = TABLES
            .iter()
            .rev()
            .zip(1..)
            .map(|(t, n)| ((*t).to_owned(), n));

        let listed = in_table_order(returned).unwrap();

        let names: Vec<&str> = listed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, TABLES);
        assert_eq!(listed[0], ("users".to_owned(), 9));
        assert_eq!(listed[5], ("update_provenance".to_owned(), 4));
        assert_eq!(listed[8], ("study_data_corrections".to_owned(), 1));
    }

    #[test]
    fn erased_corrections_follow_study_data_and_only_when_there_were_some() {
        let mut counts = vec![("actions".to_owned(), 2), ("study_data".to_owned(), 1)];
        count_erased_corrections(&mut counts, 0);
        assert_eq!(counts.len(), 2);
        count_erased_corrections(&mut counts, 3);
        assert_eq!(counts[2], ("study_data_corrections".to_owned(), 3));
    }

    #[test]
    fn a_negative_count_is_an_error() {
        let counts = [("users".to_owned(), -1)];

        assert!(matches!(in_table_order(counts), Err(StoreError::Other(_))));
    }
}
