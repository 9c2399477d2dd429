//! The `hash` mask's key. No key is built in: it comes from `MESHGATE_HASH_KEY`, or from a
//! key file only the server's user can read. `meshgate serve` creates that file with a
//! random key on its first start and reuses it after; cluster processes only read it.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meshgate_policy::HashKey;

/// Where a process's hash key came from (said at start; the key itself never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeySource {
    Environment,
    File(PathBuf),
    Created(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Environment => write!(f, "MESHGATE_HASH_KEY"),
            KeySource::File(p) => write!(f, "key file {}", p.display()),
            KeySource::Created(p) => write!(f, "new random key in {}", p.display()),
        }
    }
}

/// The key given in the environment (or a flag), else the one in `file`. With `create`,
/// a missing file is made with a random key, readable by this user only.
pub(crate) fn hash_key(
    given: Option<String>,
    file: Option<&Path>,
    create: bool,
) -> anyhow::Result<(HashKey, KeySource)> {
    if let Some(k) = given {
        return match HashKey::new(k.as_bytes()) {
            Ok(key) => Ok((key, KeySource::Environment)),
            Err(e) => bail!("MESHGATE_HASH_KEY is refused: {e}"),
        };
    }
    let Some(path) = file else {
        bail!(
            "no hash key: set MESHGATE_HASH_KEY, or --hash-key-file to the gateway's key file \
             (every process that masks must hold the same key)"
        );
    };
    if path.exists() || !create {
        return Ok((read(path)?, KeySource::File(path.to_path_buf())));
    }
    match write_new(path) {
        Ok(()) => Ok((read(path)?, KeySource::Created(path.to_path_buf()))),
        // Another replica on this machine made it first: use theirs.
        Err(e) if path.exists() => {
            tracing::debug!("{e:#}");
            Ok((read(path)?, KeySource::File(path.to_path_buf())))
        }
        Err(e) => Err(e),
    }
}

fn read(path: &Path) -> anyhow::Result<HashKey> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the hash key file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "the hash key file {} is readable by other users (mode {mode:o}): \
                 `chmod 600` it, or it is no secret",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read the hash key file {}", path.display()))?;
    let key = text.strip_suffix(b"\n").unwrap_or(&text);
    HashKey::new(key).with_context(|| format!("the hash key in {} is refused", path.display()))
}

/// 32 random bytes as 64 hex digits, written whole or not at all (a temporary file in the
/// same folder, linked into place only if nothing is there yet).
fn write_new(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut folder = std::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
    folder
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a key: {e}"))?;
    // A fresh temporary file is created readable by this user only.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    writeln!(tmp, "{}", hex::encode(bytes))?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {}", path.display(), e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_random_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/hash.key");
        let (a, source) = hash_key(None, Some(&path), true).unwrap();
        assert_eq!(source, KeySource::Created(path.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let (b, source) = hash_key(None, Some(&path), true).unwrap();
        assert_eq!(source, KeySource::File(path.clone()));
        assert_eq!(a.id(), b.id(), "the same key on the next start");
        // Another deployment gets another key.
        let other = dir.path().join("other.key");
        let (c, _) = hash_key(None, Some(&other), true).unwrap();
        assert_ne!(a.id(), c.id());
        // The environment wins over the file.
        let (d, source) =
            hash_key(Some("from-the-environment-0123".into()), Some(&path), true).unwrap();
        assert_eq!(source, KeySource::Environment);
        assert_ne!(d.id(), a.id());
    }

    #[test]
    fn a_key_file_others_can_read_or_a_missing_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hash.key");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = hash_key(None, Some(&path), true).unwrap_err().to_string();
            assert!(err.contains("readable by other users"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert!(hash_key(None, Some(&path), true).is_ok());
        // Cluster processes never make a key of their own.
        let missing = dir.path().join("missing.key");
        let err = format!("{:#}", hash_key(None, Some(&missing), false).unwrap_err());
        assert!(err.contains("missing.key"), "{err}");
        assert!(!missing.exists());
        let err = hash_key(None, None, false).unwrap_err().to_string();
        assert!(err.contains("MESHGATE_HASH_KEY"), "{err}");
        // Too short a key is refused, wherever it comes from.
        assert!(hash_key(Some("short".into()), None, false).is_err());
    }
}
