//! Where the SQL tokenizer's locations (line and character, from 1) fall in the text, so
//! that a token can be replaced in place and everything around it kept byte for byte.

use sqlparser::tokenizer::Location;

pub struct SqlText<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> SqlText<'a> {
    pub fn new(sql: &'a str) -> Self {
        SqlText {
            sql,
            line_starts: std::iter::once(0)
                .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
        }
    }

    /// The byte offset of `at`; the end of the text for a location just past it.
    pub fn offset(&self, at: Location) -> Option<usize> {
        let start = *self
            .line_starts
            .get(usize::try_from(at.line).ok()?.checked_sub(1)?)?;
        let column = usize::try_from(at.column).ok()?.checked_sub(1)?;
        match self.sql[start..].char_indices().nth(column) {
            Some((i, _)) => Some(start + i),
            None if self.sql[start..].chars().count() == column => Some(self.sql.len()),
            None => None,
        }
    }
}
