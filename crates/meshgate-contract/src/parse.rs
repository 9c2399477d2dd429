//! Reading a contract file: YAML into [`Contract`], with every problem located at a line.
//!
//! serde_yaml is the only YAML deserializer the rest of meshgate sees, and only through
//! [`parse_contract`], so it can be swapped without touching callers. Since serde_yaml keeps
//! no spans after deserializing, [`SourceMap`] indexes the same text once more with
//! yaml-rust2's marked events to put cross-field validation errors on their line.

use std::collections::HashMap;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::model::{Contract, Identifier, Version};
use crate::validate::validate;
use crate::{ContractError, Diagnostic};

/// Parses and validates one contract. `file` is only used to name the source in errors.
pub fn parse_contract(file: &Path, text: &str) -> Result<Contract, ContractError> {
    let map = SourceMap::new(text);
    let contract: Contract =
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| syntax_error(file, &map, e))?;
    let diagnostics: Vec<Diagnostic> = validate(&contract)
        .into_iter()
        .map(|(field, message)| {
            let (line, column) = map.locate(&field);
            Diagnostic {
                file: file.to_path_buf(),
                line,
                column,
                field,
                message,
            }
        })
        .collect();
    if diagnostics.is_empty() {
        Ok(contract)
    } else {
        Err(ContractError::Invalid(diagnostics))
    }
}

/// What can be read of a product's identity from a contract that fails validation, so that
/// its quarantine notice can still name the product and its owner.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Identity {
    pub domain: Option<Identifier>,
    pub dataset: Option<Identifier>,
    pub version: Option<Version>,
    pub owner: Option<String>,
}

/// Best effort: every field that is present and valid, `None` for the rest.
pub fn peek_identity(text: &str) -> Identity {
    let Ok(serde_yaml::Value::Mapping(m)) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return Identity::default();
    };
    let get = |k: &str| m.get(k).and_then(|v| v.as_str());
    Identity {
        domain: get("domain").and_then(|s| s.parse().ok()),
        dataset: get("dataset").and_then(|s| s.parse().ok()),
        version: get("version").and_then(|s| s.parse().ok()),
        owner: get("owner").map(str::to_string),
    }
}

/// Reads, parses and validates the contract at `path`.
pub fn load_contract(path: &Path) -> Result<Contract, ContractError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContractError::Io {
        path: path.to_path_buf(),
        error: source,
    })?;
    parse_contract(path, &text)
}

pub(crate) fn syntax_error(
    file: &Path,
    map: &SourceMap,
    e: serde_path_to_error::Error<serde_yaml::Error>,
) -> ContractError {
    let mut field = e.path().to_string();
    if field == "." {
        field.clear();
    }
    let inner = e.into_inner();
    // serde_yaml appends " at line L column C" and may lead with its own path; the
    // diagnostic carries both already.
    let mut message = inner.to_string();
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
    {
        message = rest.to_string();
    }
    // For an unknown key the path stops at its mapping; point at the key itself.
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
    {
        field = if field.is_empty() {
            key.to_string()
        } else {
            format!("{field}.{key}")
        };
    }
    let (line, column) = match (field.is_empty(), inner.location()) {
        (false, _) => map.locate(&field),
        (true, Some(l)) => (l.line(), l.column()),
        (true, None) => (1, 1),
    };
    ContractError::Invalid(vec![Diagnostic {
        file: file.to_path_buf(),
        line,
        column,
        field,
        message,
    }])
}

/// Field path (`schema[2].mask`) → (line, column) of the key or item, 1-based.
pub(crate) struct SourceMap {
    positions: HashMap<String, (usize, usize)>,
}

impl SourceMap {
    pub(crate) fn new(text: &str) -> Self {
        let mut indexer = Indexer::default();
        // A text serde_yaml accepted is valid YAML; if this parser disagrees, errors
        // simply fall back to line 1.
        let _ = Parser::new_from_str(text).load(&mut indexer, false);
        SourceMap {
            positions: indexer.positions,
        }
    }

    /// The closest located ancestor of `field`, or the top of the file.
    pub(crate) fn locate(&self, field: &str) -> (usize, usize) {
        let mut path = field;
        loop {
            if let Some(pos) = self.positions.get(path) {
                return *pos;
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return (1, 1),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Indexer {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

impl Indexer {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn node_path(&mut self, scalar: Option<&str>, mark: Marker) -> Option<String> {
        // yaml-rust2 columns are 0-based; diagnostics are 1-based like lines.
        let pos = (mark.line(), mark.col() + 1);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.positions.insert(p.clone(), pos);
                Some(p)
            }
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => Some(join(path, &k)),
                None => {
                    let k = scalar.unwrap_or("?").to_string();
                    self.positions.insert(join(path, &k), pos);
                    *key = Some(k);
                    None
                }
            },
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Indexer {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                self.node_path(Some(&value), mark);
            }
            Event::Alias(_) => {
                self.node_path(None, mark);
            }
            Event::MappingStart(..) => {
                let path = self.node_path(None, mark).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(None, mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_fields() {
        let text =
            "dataset: a\nschema:\n  - name: x\n    type: string\n  - name: y\n    mask: hash\n";
        let map = SourceMap::new(text);
        assert_eq!(map.locate("dataset").0, 1);
        assert_eq!(map.locate("schema[1].mask").0, 6);
        assert_eq!(map.locate("schema[1].name").0, 5);
        assert_eq!(map.locate("schema[0]").0, 3);
        // Unknown leaf: nearest ancestor.
        assert_eq!(map.locate("schema[1].pattern").0, 5);
    }
}
