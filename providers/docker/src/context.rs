//! Docker build contexts: walking a context directory while honouring its
//! `.dockerignore`, writing it as a deterministic tar (sorted paths, zero
//! mtimes and owners, only the permission bits kept), and the `build_hash`
//! of a `docker_image` build: SHA-256 over that tar plus the Dockerfile
//! name, build args and target.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use berth_provider::ProviderError;
use sha2::{Digest, Sha256};

/// What a `build { ... }` block asks for, with the context directory already
/// resolved against the configuration's directory.
#[derive(Clone, Debug)]
pub(crate) struct BuildSpec {
    /// The context directory.
    pub dir: PathBuf,
    /// The Dockerfile's path inside the context.
    pub dockerfile: String,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// The multi-stage target, if any.
    pub target: Option<String>,
}

impl BuildSpec {
    /// The context as a tar archive, ready to be sent to the engine.
    pub(crate) fn tar(&self) -> Result<Vec<u8>, ProviderError> {
        write_context(&self.dir, &self.dockerfile, Vec::new())
    }

    /// The content hash of the build: the context's tar, the Dockerfile
    /// name, the build args and the target.
    pub(crate) fn hash(&self) -> Result<String, ProviderError> {
        let mut hasher = write_context(&self.dir, &self.dockerfile, HashWriter(Sha256::new()))?.0;
        hasher.update(b"\0dockerfile=");
        hasher.update(self.dockerfile.as_bytes());
        for (key, value) in &self.build_args {
            hasher.update(b"\0arg=");
            hasher.update(key.as_bytes());
            hasher.update(b"\0");
            hasher.update(value.as_bytes());
        }
        hasher.update(b"\0target=");
        hasher.update(self.target.as_deref().unwrap_or("").as_bytes());
        Ok(hex::encode(hasher.finalize()))
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn io_error(what: &str, path: &Path, e: io::Error) -> ProviderError {
    ProviderError::Config(format!("{what} {}: {e}", path.display()))
}

/// Writes the build context in `dir` as a tar to `out`, skipping what
/// `.dockerignore` excludes (the Dockerfile and `.dockerignore` themselves
/// are always sent, as Docker does).
pub(crate) fn write_context<W: Write>(
    dir: &Path,
    dockerfile: &str,
    out: W,
) -> Result<W, ProviderError> {
    let meta = fs::metadata(dir).map_err(|e| io_error("cannot read build context", dir, e))?;
    if !meta.is_dir() {
        return Err(ProviderError::Config(format!(
            "build context {} is not a directory",
            dir.display()
        )));
    }
    let dockerfile = clean_path(dockerfile);
    if dockerfile.is_empty() || dockerfile.starts_with("../") || dockerfile == ".." {
        return Err(ProviderError::Config(format!(
            "dockerfile `{dockerfile}` must be a path inside the build context"
        )));
    }
    if !dir.join(&dockerfile).is_file() {
        return Err(ProviderError::Config(format!(
            "no Dockerfile at {}",
            dir.join(&dockerfile).display()
        )));
    }

    let ignore_path = dir.join(".dockerignore");
    let patterns = match fs::read_to_string(&ignore_path) {
        Ok(text) => parse_dockerignore(&text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_error("cannot read", &ignore_path, e)),
    };
    let ignore = Ignore { patterns };
    let always: [&str; 2] = [&dockerfile, ".dockerignore"];

    let mut entries = Vec::new();
    collect(dir, "", &ignore, &always, &mut entries)?;
    entries.sort();

    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    for rel in entries {
        let path = dir.join(&rel);
        append(&mut builder, &path, &rel)
            .map_err(|e| io_error("cannot add to build context", &path, e))?;
    }
    builder
        .into_inner()
        .map_err(|e| io_error("cannot write build context of", dir, e))
}

/// Collects the relative paths (with `/` separators) of everything under
/// `dir/prefix` that is sent.
fn collect(
    root: &Path,
    prefix: &str,
    ignore: &Ignore,
    always: &[&str],
    out: &mut Vec<String>,
) -> Result<(), ProviderError> {
    let dir = if prefix.is_empty() {
        root.to_path_buf()
    } else {
        root.join(prefix)
    };
    let read = fs::read_dir(&dir).map_err(|e| io_error("cannot read", &dir, e))?;
    for entry in read {
        let entry = entry.map_err(|e| io_error("cannot read", &dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry
            .file_type()
            .map_err(|e| io_error("cannot read", &entry.path(), e))?;
        let excluded = ignore.excludes(&rel) && !always.contains(&rel.as_str());
        if file_type.is_dir() {
            if !excluded {
                out.push(rel.clone());
            }
            // An excluded directory may still hold re-included (`!`) paths
            // or the Dockerfile.
            if !excluded
                || ignore.has_negations()
                || always.iter().any(|a| a.starts_with(&format!("{rel}/")))
            {
                collect(root, &rel, ignore, always, out)?;
            }
        } else if (file_type.is_file() || file_type.is_symlink()) && !excluded {
            out.push(rel);
        }
    }
    Ok(())
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &Path, rel: &str) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    let mut header = tar::Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mode(mode_of(&meta));
    if meta.file_type().is_symlink() {
        let target = fs::read_link(path)?;
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder.append_link(&mut header, rel, target)
    } else if meta.is_dir() {
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        builder.append_data(&mut header, format!("{rel}/"), io::empty())
    } else {
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(meta.len());
        let file = fs::File::open(path)?;
        builder.append_data(&mut header, rel, file)
    }
}

#[cfg(unix)]
fn mode_of(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode_of(meta: &fs::Metadata) -> u32 {
    if meta.is_dir() { 0o755 } else { 0o644 }
}

/// `filepath.Clean`-like: drops empty and `.` segments and leading `/`,
/// resolves `..` where it can.
fn clean_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(p) if *p != "..") {
                    parts.pop();
                } else {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// One `.dockerignore` line.
#[derive(Clone, Debug, PartialEq)]
struct Pattern {
    negate: bool,
    parts: Vec<String>,
}

/// The parsed `.dockerignore`.
struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    fn has_negations(&self) -> bool {
        self.patterns.iter().any(|p| p.negate)
    }

    /// Whether the context-relative `path` is excluded: the last pattern
    /// that matches it or one of its parent directories decides.
    fn excludes(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').collect();
        let mut excluded = false;
        for pattern in &self.patterns {
            let matched = (1..=comps.len()).any(|k| match_parts(&pattern.parts, &comps[..k]));
            if matched {
                excluded = !pattern.negate;
            }
        }
        excluded
    }
}

fn parse_dockerignore(text: &str) -> Vec<Pattern> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (negate, rest) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean_path(rest);
            if cleaned.is_empty() {
                return None;
            }
            Some(Pattern {
                negate,
                parts: cleaned.split('/').map(str::to_owned).collect(),
            })
        })
        .collect()
}

fn match_parts(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((head, tail)) => {
                let p: Vec<char> = first.chars().collect();
                let n: Vec<char> = head.chars().collect();
                match_component(&p, &n) && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` classes
/// (with `^` negation and ranges) and `\` escapes.
fn match_component(pattern: &[char], name: &[char]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|skip| match_component(&pattern[1..], &name[skip..])),
        Some('?') => !name.is_empty() && match_component(&pattern[1..], &name[1..]),
        Some('[') => {
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            match match_class(&pattern[1..], c) {
                Some((true, after)) => match_component(after, tail),
                _ => false,
            }
        }
        Some('\\') if pattern.len() > 1 => {
            name.first() == Some(&pattern[1]) && match_component(&pattern[2..], &name[1..])
        }
        Some(&p) => name.first() == Some(&p) && match_component(&pattern[1..], &name[1..]),
    }
}

/// Matches `c` against a class whose `[` is already consumed; returns
/// whether it matched and the pattern after the closing `]`, or `None` for
/// a malformed class (which matches nothing).
fn match_class(pattern: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut i) = match pattern.first() {
        Some('^') | Some('!') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == ']' && !first {
            return Some((matched != negated, &pattern[i + 1..]));
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *pattern.get(i)?
        } else {
            lo
        };
        i += 1;
        let hi = if pattern.get(i) == Some(&'-') && pattern.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            let hi = if pattern[i] == '\\' {
                i += 1;
                *pattern.get(i)?
            } else {
                pattern[i]
            };
            i += 1;
            hi
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore {
            patterns: parse_dockerignore(text),
        }
    }

    #[test]
    fn globs_match_like_go() {
        let m = |p: &str, n: &str| {
            match_component(
                &p.chars().collect::<Vec<_>>(),
                &n.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("*.log", "a.log"));
        assert!(!m("*.log", "a.txt"));
        assert!(m("a?c", "abc"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("\\*", "*"));
        assert!(!m("[a-", "a"));
    }

    #[test]
    fn dockerignore_semantics() {
        let ig = ignore("# comment\n\ntarget\n*.log\n!keep.log\n/docs/**/*.md\n./tmp/\n");
        assert!(ig.excludes("target"));
        assert!(ig.excludes("target/debug/x"));
        assert!(ig.excludes("a.log"));
        assert!(!ig.excludes("keep.log"));
        assert!(!ig.excludes("sub/a.log"), "*.log only matches at the top");
        assert!(ig.excludes("docs/a.md"));
        assert!(ig.excludes("docs/x/y/a.md"));
        assert!(!ig.excludes("docs/a.txt"));
        assert!(ig.excludes("tmp/file"));
        assert!(!ig.excludes("src/main.rs"));
        let ig = ignore("**/*.log");
        assert!(ig.excludes("a.log"));
        assert!(ig.excludes("x/y/a.log"));
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean_path("./a//b/../c/"), "a/c");
        assert_eq!(clean_path("/x"), "x");
        assert_eq!(clean_path("../x"), "../x");
    }

    fn spec(dir: &Path) -> BuildSpec {
        BuildSpec {
            dir: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            build_args: BTreeMap::new(),
            target: None,
        }
    }

    #[test]
    fn hash_is_deterministic_and_honours_dockerignore() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(dir.path().join(".dockerignore"), "ignored\n*.tmp\n").unwrap();
        fs::write(dir.path().join("app.txt"), "one").unwrap();
        fs::create_dir(dir.path().join("ignored")).unwrap();
        fs::write(dir.path().join("ignored/x"), "x").unwrap();
        let h1 = spec(dir.path()).hash().unwrap();
        assert_eq!(h1, spec(dir.path()).hash().unwrap());

        fs::write(dir.path().join("ignored/x"), "changed").unwrap();
        fs::write(dir.path().join("scratch.tmp"), "new").unwrap();
        assert_eq!(
            h1,
            spec(dir.path()).hash().unwrap(),
            "ignored files do not count"
        );

        fs::write(dir.path().join("app.txt"), "two").unwrap();
        let h2 = spec(dir.path()).hash().unwrap();
        assert_ne!(h1, h2);

        let mut with_arg = spec(dir.path());
        with_arg.build_args.insert("A".into(), "1".into());
        assert_ne!(h2, with_arg.hash().unwrap());
        let mut with_target = spec(dir.path());
        with_target.target = Some("prod".into());
        assert_ne!(h2, with_target.hash().unwrap());
    }

    #[test]
    fn tar_lists_sorted_entries_without_ignored_ones() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("Dockerfile"), "FROM scratch\n").unwrap();
        fs::write(dir.path().join(".dockerignore"), "Dockerfile\nb\n").unwrap();
        fs::create_dir(dir.path().join("b")).unwrap();
        fs::write(dir.path().join("b/z"), "z").unwrap();
        fs::write(dir.path().join("a"), "a").unwrap();
        let bytes = spec(dir.path()).tar().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert_eq!(e.header().mtime().unwrap(), 0);
                e.path().unwrap().to_string_lossy().into_owned()
            })
            .collect();
        assert_eq!(names, [".dockerignore", "Dockerfile", "a"]);
    }

    #[test]
    fn missing_dockerfile_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            spec(dir.path()).hash(),
            Err(ProviderError::Config(_))
        ));
    }
}
