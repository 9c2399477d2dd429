use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::stores::S3Config;

/// Where the mesh lives on disk. Relative paths are resolved against `root`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// The folder that relative paths in contracts and here are resolved against.
    #[serde(skip)]
    pub root: PathBuf,
    pub contracts: PathBuf,
    /// Each domain's data root defaults to `<data>/<domain>/`.
    pub data: PathBuf,
    /// Per-domain data roots that override the default (docs/DESIGN.md §4.7).
    pub domain_roots: BTreeMap<String, PathBuf>,
    /// The mesh-wide rules; default `<contracts>/governance.yaml` when that file exists.
    pub governance: Option<PathBuf>,
    /// How `s3://` locations and data roots are reached.
    pub s3: S3Config,
}

/// Where data lives: a folder, or an object store prefix (`s3://bucket/mesh`). Both a
/// domain's data root and a product's location are one.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    Local(PathBuf),
    /// Without a trailing slash as a domain root.
    Url(String),
}

impl Location {
    /// The folder as a URL DataFusion lists (a trailing slash means "this folder").
    pub fn as_url(&self) -> String {
        match self {
            Location::Local(p) => format!("{}/", p.display()),
            Location::Url(u) => format!("{}/", u.trim_end_matches('/')),
        }
    }
}

/// `s3://…` as written, trailing slashes removed; `None` for a path.
pub(crate) fn url_of(p: &Path) -> Option<String> {
    p.to_str()
        .filter(|s| s.starts_with("s3://"))
        .map(|s| s.trim_end_matches('/').to_string())
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            root: PathBuf::from("."),
            contracts: PathBuf::from("contracts"),
            data: PathBuf::from("sample-data"),
            domain_roots: BTreeMap::new(),
            governance: None,
            s3: S3Config::default(),
        }
    }
}

impl MeshConfig {
    /// A mesh rooted at `root` with the default layout.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        MeshConfig {
            root: root.into(),
            ..Default::default()
        }
    }

    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    pub fn contracts_dir(&self) -> PathBuf {
        self.resolve(&self.contracts)
    }

    /// The governance file in force, if any.
    pub fn governance_file(&self) -> Option<PathBuf> {
        match &self.governance {
            Some(p) => Some(self.resolve(p)),
            None => Some(self.contracts_dir().join("governance.yaml")).filter(|p| p.is_file()),
        }
    }

    /// A path or location as callers may see it: relative to the mesh (`sample-data/…`,
    /// `contracts/…`) or to a domain's data root, never the server's absolute path. URLs
    /// of object stores are shown as contracts write them.
    pub fn shown(&self, location: &str) -> String {
        if location.contains("://") && !location.starts_with("file://") {
            return location.to_string();
        }
        let slash = if location.ends_with('/') { "/" } else { "" };
        let path = crate::mesh::normalize(Path::new(location.trim_start_matches("file://")));
        let under = |base: &Path, label: &str| {
            path.strip_prefix(crate::mesh::normalize(base))
                .ok()
                .map(|rel| {
                    let rel = rel.display().to_string();
                    let sep = if label.is_empty() || rel.is_empty() {
                        ""
                    } else {
                        "/"
                    };
                    format!("{label}{sep}{rel}{slash}")
                })
        };
        let mut bases: Vec<(PathBuf, String)> = vec![
            (self.contracts_dir(), "contracts".into()),
            (self.root.clone(), String::new()),
        ];
        for (domain, dir) in &self.domain_roots {
            if url_of(dir).is_none() {
                bases.push((self.resolve(dir), format!("<{domain} data root>")));
            }
        }
        if url_of(&self.data).is_none() {
            bases.push((self.resolve(&self.data), "<data root>".into()));
        }
        // The most specific base first.
        bases.sort_by_key(|(b, _)| std::cmp::Reverse(b.components().count()));
        bases
            .iter()
            .find_map(|(b, label)| under(b, label))
            .unwrap_or_else(|| {
                let name = path.file_name().map(|n| n.to_string_lossy().to_string());
                format!("<outside the mesh>/{}{slash}", name.unwrap_or_default())
            })
    }

    /// The only folder (or object store prefix) a domain's products may read from.
    pub fn domain_root(&self, domain: &str) -> Location {
        match self.domain_roots.get(domain) {
            Some(p) => match url_of(p) {
                Some(u) => Location::Url(u),
                None => Location::Local(self.resolve(p)),
            },
            None => match url_of(&self.data) {
                Some(u) => Location::Url(format!("{u}/{domain}")),
                None => Location::Local(self.resolve(&self.data).join(domain)),
            },
        }
    }
}
