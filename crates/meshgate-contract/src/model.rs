//! The typed contract: what a domain team promises about one major version of a product.
//!
//! Field types validate themselves while deserializing, so a bad value is reported by the
//! YAML parser with its exact line and column; checks that need several fields at once live
//! in [`crate::validate`].

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::types::ColumnType;

/// One data contract, as written by its owning team.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Contract {
    pub dataset: Identifier,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<Identifier>,
    pub owner: Owner,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the Parquet files live; `None` means the default under the domain's data root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// How the location is laid out: a folder of Parquet files, or a Delta Lake table.
    #[serde(default, skip_serializing_if = "StorageFormat::is_default")]
    pub format: StorageFormat,
    /// A Delta table read as of one version or time rather than its latest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaPin>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<Sla>,
    pub schema: Vec<Column>,
    #[serde(default)]
    pub access_policy: Vec<Grant>,
    /// Set for a derived product: its data is the result of SQL over other products,
    /// published by the refresher rather than by a producer's pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DerivedSource>,
}

/// How a product's location holds its data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageFormat {
    /// Every `*.parquet` file under the location is the product.
    #[default]
    Parquet,
    /// A Delta Lake table: its transaction log says which files are the product, so files
    /// it has removed (overwritten, deleted, compacted) are never read.
    Delta,
}

impl StorageFormat {
    pub fn is_default(&self) -> bool {
        *self == StorageFormat::Parquet
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StorageFormat::Parquet => "parquet",
            StorageFormat::Delta => "delta",
        }
    }
}

impl fmt::Display for StorageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which snapshot of a Delta table the product serves, when not the latest: consumers of a
/// pinned product see the same rows whatever the producer commits next. Written
/// `delta: {version: 12}` or `delta: {timestamp: "2026-11-30T12:00:00Z"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "DeltaPinYaml", into = "DeltaPinYaml")]
pub enum DeltaPin {
    /// A table version (the number of its commit).
    Version(u64),
    /// The table as of this instant: the last version committed at or before it.
    Timestamp(chrono::DateTime<chrono::Utc>),
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct DeltaPinYaml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
}

impl TryFrom<DeltaPinYaml> for DeltaPin {
    type Error = String;

    fn try_from(y: DeltaPinYaml) -> Result<Self, String> {
        match (y.version, y.timestamp) {
            (Some(v), None) => Ok(DeltaPin::Version(v)),
            (None, Some(text)) => chrono::DateTime::parse_from_rfc3339(&text)
                .map(|t| DeltaPin::Timestamp(t.with_timezone(&chrono::Utc)))
                .map_err(|e| {
                    format!("{text:?} is not an RFC 3339 time (2026-11-30T12:00:00Z): {e}")
                }),
            _ => Err("pin exactly one of version or timestamp".into()),
        }
    }
}

impl From<DeltaPin> for DeltaPinYaml {
    fn from(p: DeltaPin) -> Self {
        match p {
            DeltaPin::Version(v) => DeltaPinYaml {
                version: Some(v),
                timestamp: None,
            },
            DeltaPin::Timestamp(t) => DeltaPinYaml {
                version: None,
                timestamp: Some(t.to_rfc3339()),
            },
        }
    }
}

impl fmt::Display for DeltaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeltaPin::Version(v) => write!(f, "version {v}"),
            DeltaPin::Timestamp(t) => write!(f, "as of {}", t.to_rfc3339()),
        }
    }
}

/// How a derived product is computed and how often.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DerivedSource {
    /// A query over the mesh, run as the owning domain's service principal: its inputs
    /// arrive masked and filtered exactly as that principal reads them.
    pub sql: String,
    /// How often the result is computed again (`"1 hour"`).
    pub refresh: Freshness,
}

impl Contract {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.schema.iter().find(|c| c.name.as_str() == name)
    }

    /// The grants of one role (a role normally has at most one, validation enforces it).
    pub fn grant_for(&self, role: &str) -> Option<&Grant> {
        self.access_policy.iter().find(|g| g.role.0 == role)
    }
}

/// Service levels the owning team is paged on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Sla {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Percent>,
}

/// One column of the product's interface.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: ColumnName,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unique: bool,
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<Scalar>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Scalar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `None` when the contract does not say; governance may require it to be explicit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskKind>,
    /// What each code means. Also the allowed set: a value outside it fails the checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<ValueLabel>>,
    /// The unit of a number (`USD`, `kg`, `ms`), so a consumer does not guess it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// What kind of data the column holds (`pii.email`, `finance`): the mesh-wide policies
    /// of governance.yaml match these, so one rule covers every product that carries it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

/// One code of a column and what it means.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValueLabel {
    pub value: Scalar,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Column {
    /// The values a check accepts: the `enum`, or the labelled `values` (never both).
    pub fn allowed_values(&self) -> Option<Vec<Scalar>> {
        match (&self.allowed, &self.values) {
            (Some(a), _) => Some(a.clone()),
            (None, Some(v)) => Some(v.iter().map(|v| v.value.clone()).collect()),
            (None, None) => None,
        }
    }

    /// The column's description with its unit and the meaning of its codes, in one text:
    /// the comment clients show where only a comment fits (Postgres, JDBC remarks).
    pub fn comment(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(d) = &self.description {
            parts.push(d.trim_end_matches('.').to_string());
        }
        if let Some(u) = &self.unit {
            parts.push(format!("Unit: {u}"));
        }
        if let Some(values) = &self.values {
            let list: Vec<String> = values
                .iter()
                .map(|v| format!("{} = {}", v.value, v.label))
                .collect();
            parts.push(format!("Values: {}", list.join(", ")));
        }
        (!parts.is_empty()).then(|| parts.join(". "))
    }

    pub fn is_pii(&self) -> bool {
        self.pii == Some(true)
    }

    /// The mask shown to `read_masked` callers: the declared one, `hash` by default, none
    /// for columns that are not PII.
    pub fn effective_mask(&self) -> Option<MaskKind> {
        self.is_pii().then(|| self.mask.unwrap_or(MaskKind::Hash))
    }
}

/// What one role may do with the product.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub role: Role,
    pub permission: Permission,
    /// A SQL predicate over the contract's columns; rows it rejects are invisible to the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_filter: Option<String>,
}

/// Ordered from least to most permissive, so that `max` picks the winning grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ReadMasked,
    Read,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::ReadMasked => "read_masked",
            Permission::Read => "read",
        })
    }
}

/// How a PII column is shown under `read_masked` (docs/DESIGN.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    Hash,
    Redact,
    Null,
    Email,
    Last4,
    Year,
}

impl MaskKind {
    pub const ALL: [MaskKind; 6] = [
        MaskKind::Hash,
        MaskKind::Redact,
        MaskKind::Null,
        MaskKind::Email,
        MaskKind::Last4,
        MaskKind::Year,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MaskKind::Hash => "hash",
            MaskKind::Redact => "redact",
            MaskKind::Null => "null",
            MaskKind::Email => "email",
            MaskKind::Last4 => "last4",
            MaskKind::Year => "year",
        }
    }

    /// The least strict mask that hides everything `self` or `other` hides: what a value
    /// may be shown as when two rules each require a mask. Masks are not a line: `hash`
    /// keeps equality that `last4` loses and `last4` keeps characters `hash` hides, so two
    /// different masks meet at `redact` (only whether the value is there), and `null`
    /// (not even that) wins over all.
    pub fn meet(self, other: MaskKind) -> MaskKind {
        match (self, other) {
            (a, b) if a == b => a,
            (MaskKind::Null, _) | (_, MaskKind::Null) => MaskKind::Null,
            _ => MaskKind::Redact,
        }
    }

    /// Whether `self` shows nothing that `other` hides (`redact` is at least as strict as
    /// `hash`; `hash` and `email` are not comparable).
    pub fn at_least_as_strict_as(self, other: MaskKind) -> bool {
        self.meet(other) == self
    }

    /// Whether the mask is defined for a column of this type. Masks that would change the
    /// meaning of a type (`email` on a number) are refused at validation.
    pub fn fits(self, ty: &ColumnType) -> bool {
        match self {
            MaskKind::Hash | MaskKind::Redact | MaskKind::Null => true,
            MaskKind::Email | MaskKind::Last4 => matches!(ty, ColumnType::String),
            MaskKind::Year => matches!(ty, ColumnType::Date | ColumnType::Timestamp),
        }
    }
}

impl fmt::Display for MaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A literal in a column check (`enum`, `min`, `max`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::String(s) => write!(f, "{s}"),
        }
    }
}

/// Serde through `FromStr` and `Display`, so that a bad value is refused while parsing,
/// with the parser's location.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}
pub(crate) use serde_via_str;

/// Defines a string newtype that checks its value while deserializing.
macro_rules! checked_string {
    ($(#[$doc:meta])* $name:ident, $check:expr, $expected:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let check: fn(&str) -> bool = $check;
                if check(s) {
                    Ok(Self(s.to_string()))
                } else {
                    Err(format!("invalid value {s:?}, expected {}", $expected))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        serde_via_str!($name);
    };
}

static IDENTIFIER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_]*$").unwrap());
static COLUMN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*$").unwrap());
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$").unwrap()
});
static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$").unwrap());
static ROLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Za-z][A-Za-z0-9_.-]*$").unwrap());

checked_string!(
    /// A dataset or domain name: it becomes a SQL identifier, so it is kept lower-case.
    Identifier,
    |s| IDENTIFIER.is_match(s) && s.len() <= 63,
    "a lower-case name matching [a-z][a-z0-9_]* (at most 63 characters)"
);
checked_string!(
    /// A column name as it appears in the Parquet files.
    ColumnName,
    |s| COLUMN.is_match(s),
    "a column name matching [A-Za-z_][A-Za-z0-9_]*"
);
checked_string!(
    /// The owning team's address: where pages and quarantine notices go.
    Owner,
    |s| EMAIL.is_match(s),
    "an e-mail address such as team-checkout@company.com"
);
checked_string!(
    /// A column's kind for mesh-wide policies: lower-case words joined by dots
    /// (`pii.email`), so a policy on `pii.email` never matches `pii.emails` by accident.
    Tag,
    |s| TAG.is_match(s) && s.len() <= 63,
    "a tag of lower-case words joined by dots, such as pii.email"
);
checked_string!(
    Role,
    |s| ROLE.is_match(s),
    "a role name matching [A-Za-z][A-Za-z0-9_.-]*"
);

/// A major version, `v1`, `v2`…; only majors exist, since breaking changes are what need one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32);

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.strip_prefix('v')
            .filter(|n| !n.starts_with('0'))
            .and_then(|n| n.parse::<u32>().ok())
            .map(Version)
            .ok_or_else(|| format!("invalid version {s:?}, expected v<major> such as v1"))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // `version: 1` is a common slip; say what is expected instead of a type error.
        let s = match serde_yaml_scalar(d)? {
            Some(s) => s,
            None => return Err(serde::de::Error::custom("expected v<major> such as v1")),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads a scalar of any YAML type as text (numbers and booleans included).
fn serde_yaml_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::String(s) => Ok(Some(s)),
        other => Ok(Some(other.to_string())),
    }
}

/// Maximum age of the newest data, written like `1 hour` or `15 minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness(pub Duration);

impl FromStr for Freshness {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // humantime wants `1hour`; people write `1 hour`.
        let compact: String = s.split_whitespace().collect();
        match humantime::parse_duration(&compact) {
            Ok(d) if !d.is_zero() => Ok(Freshness(d)),
            _ => Err(format!(
                "invalid duration {s:?}, expected e.g. \"1 hour\", \"30 minutes\", \"2 days\""
            )),
        }
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

serde_via_str!(Freshness);

/// A share of rows, written `99.9%`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Percent(pub f64);

impl Percent {
    pub fn ratio(self) -> f64 {
        self.0 / 100.0
    }
}

impl FromStr for Percent {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .filter(|p| (0.0..=100.0).contains(p))
            .map(Percent)
            .ok_or_else(|| format!("invalid percentage {s:?}, expected e.g. \"99.9%\""))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

serde_via_str!(Percent);
