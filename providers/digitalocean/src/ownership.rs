//! berth's ownership marks as DigitalOcean tags.
//!
//! DigitalOcean has no labels, only tags: names of at most 255 letters,
//! digits, colons, dashes and underscores, case-insensitive ("case
//! stable": the first spelling wins). berth stamps four tags on every
//! droplet it creates:
//!
//! - `berth-env:<env>`
//! - `berth-lineage:<lineage>` (what refresh lists by: `GET
//!   /v2/droplets?tag_name=berth-lineage:<lineage>`)
//! - `berth-addr:<address>`, e.g. `berth-addr:digitalocean_droplet__web`
//! - `berth-cfg:<config hash>`: the full 64-hex-digit hash, so the engine's
//!   adoption check compares exactly what it stored.
//!
//! Firewalls get the same four with a `berth-fw-` prefix
//! (`berth-fw-lineage:<lineage>`, ...). A firewall's `tags` are not
//! labels: they attach the firewall to every droplet carrying one of them.
//! A `berth-lineage:` tag on a firewall would open its ports on every droplet
//! of the environment; the `berth-fw-` tags are carried by no droplet, so
//! they attach the firewall to nothing. Tags starting with `berth-` are
//! reserved: [`check_user_tags`] refuses them in configurations.
//!
//! Values are encoded so that they fit the tag alphabet, survive
//! DigitalOcean's case folding and decode back exactly: lower-case letters,
//! digits and `-` stay; `.` becomes `__`; `_` stays unless it is next to
//! another `_` or a `.` (then it is escaped); everything else, upper-case
//! letters included, becomes `:` and two lower-case hex digits per UTF-8
//! byte (`web["a"]` → `web:5b:22a:22:5d`).
//!
//! SSH keys cannot carry tags at all; see [`crate::ssh_key`] for how they
//! are tracked.

use berth_provider::{Ownership, ProviderError};

/// The most characters DigitalOcean allows in a tag.
pub(crate) const MAX_TAG_LEN: usize = 255;

/// The prefix reserved for berth's own tags.
pub(crate) const RESERVED_PREFIX: &str = "berth-";

/// Which family of tags: the ones on droplets, or the inert ones on
/// firewalls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `berth-env:` ...
    Droplet,
    /// `berth-fw-env:` ...
    Firewall,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Droplet => "berth-",
            Self::Firewall => "berth-fw-",
        }
    }

    fn key(self, name: &str) -> String {
        format!("{}{name}:", self.prefix())
    }
}

/// Encodes `value` into the tag alphabet (see the module docs).
pub(crate) fn encode(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let mut out = String::with_capacity(value.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            'a'..='z' | '0'..='9' | '-' => out.push(c),
            '.' => out.push_str("__"),
            '_' => {
                let touches = |n: Option<&char>| matches!(n, Some('_' | '.'));
                let prev = i.checked_sub(1).and_then(|p| chars.get(p));
                if touches(prev) || touches(chars.get(i + 1)) {
                    out.push_str(":5f");
                } else {
                    out.push('_');
                }
            }
            other => {
                let mut buf = [0u8; 4];
                for byte in other.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!(":{byte:02x}"));
                }
            }
        }
    }
    out
}

/// Decodes what [`encode`] produced; `None` if it is not such a value.
pub(crate) fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'_' if bytes.get(i + 1) == Some(&b'_') => {
                out.push(b'.');
                i += 2;
            }
            b':' => {
                let hex = encoded.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b @ (b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_') => {
                out.push(b.to_ascii_lowercase());
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Whether `tag` is in berth's reserved namespace.
pub(crate) fn is_berth_tag(tag: &str) -> bool {
    tag.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// The tags of a configuration without berth's own.
pub(crate) fn user_tags(tags: &[String]) -> Vec<String> {
    tags.iter().filter(|t| !is_berth_tag(t)).cloned().collect()
}

/// Problems with user-given tags: berth's prefix, the alphabet, the length.
pub(crate) fn check_user_tags(tags: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    for tag in tags {
        if is_berth_tag(tag) {
            problems.push(format!(
                "tag `{tag}` is in berth's reserved `{RESERVED_PREFIX}` namespace"
            ));
        } else if let Err(e) = check_tag(tag) {
            problems.push(e);
        }
    }
    problems
}

/// Checks one tag name against DigitalOcean's rules.
pub(crate) fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Err("tags must not be empty".to_owned());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "tag `{tag}` is longer than DigitalOcean's {MAX_TAG_LEN} characters"
        ));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'))
    {
        return Err(format!(
            "tag `{tag}` may contain only letters, numbers, colons, dashes and underscores"
        ));
    }
    Ok(())
}

/// The env and lineage tags: what berth lists by.
pub(crate) fn owner_tags(kind: Kind, owner: &Ownership) -> [String; 2] {
    [
        format!("{}{}", kind.key("env"), encode(&owner.env)),
        format!("{}{}", kind.key("lineage"), encode(&owner.lineage)),
    ]
}

/// The tag refresh filters droplets by.
pub(crate) fn lineage_tag(kind: Kind, owner: &Ownership) -> String {
    let [_, lineage] = owner_tags(kind, owner);
    lineage
}

/// All four ownership tags for the object at `address` created from a
/// configuration hashed to `config_hash`.
pub(crate) fn tags_for(
    kind: Kind,
    owner: &Ownership,
    address: &str,
    config_hash: &str,
) -> Result<Vec<String>, ProviderError> {
    let [env, lineage] = owner_tags(kind, owner);
    let tags = vec![
        env,
        lineage,
        format!("{}{}", kind.key("addr"), encode(address)),
        format!("{}{}", kind.key("cfg"), encode(config_hash)),
    ];
    for tag in &tags {
        if tag.len() > MAX_TAG_LEN {
            return Err(ProviderError::Config(format!(
                "cannot record `{address}` in a DigitalOcean tag: `{tag}` is longer than \
                 {MAX_TAG_LEN} characters (shorten the address, env name or lineage)"
            )));
        }
    }
    Ok(tags)
}

/// What berth's tags on an object say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Marks {
    /// The decoded `addr` tag.
    pub(crate) address: Option<String>,
    /// The `cfg` tag.
    pub(crate) config_hash: Option<String>,
}

/// Reads the marks of `kind` from an object's tags if it belongs to
/// `owner` (both its env and lineage tags are present); `None` otherwise.
pub(crate) fn owned_marks(kind: Kind, owner: &Ownership, tags: &[String]) -> Option<Marks> {
    let has = |wanted: &str| tags.iter().any(|t| t.eq_ignore_ascii_case(wanted));
    let [env, lineage] = owner_tags(kind, owner);
    if !(has(&env) && has(&lineage)) {
        return None;
    }
    let value = |name: &str| {
        let key = kind.key(name);
        tags.iter().find_map(|t| {
            t.get(..key.len())
                .filter(|p| p.eq_ignore_ascii_case(&key))
                .and_then(|_| t.get(key.len()..))
                .and_then(decode)
        })
    };
    Some(Marks {
        address: value("addr"),
        config_hash: value("cfg"),
    })
}

/// berth's tags of `kind` among `tags`.
pub(crate) fn berth_tags_of(kind: Kind, tags: &[String]) -> Vec<String> {
    let keys = ["env", "lineage", "addr", "cfg"].map(|k| kind.key(k));
    tags.iter()
        .filter(|t| {
            keys.iter()
                .any(|k| t.get(..k.len()).is_some_and(|p| p.eq_ignore_ascii_case(k)))
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Ownership {
        Ownership {
            env: "prod".into(),
            lineage: "4f1c-9a".into(),
        }
    }

    #[test]
    fn plain_addresses_read_naturally() {
        assert_eq!(
            encode("digitalocean_droplet.web"),
            "digitalocean_droplet__web"
        );
        assert_eq!(
            encode("module.app.digitalocean_droplet.web"),
            "module__app__digitalocean_droplet__web"
        );
    }

    #[test]
    fn encoding_round_trips() {
        for s in [
            "digitalocean_droplet.web",
            "digitalocean_droplet.web[0]",
            "digitalocean_droplet.web[\"a b\"]",
            "a__b",
            "a_.b",
            "a._b",
            "_x_",
            "..",
            "Prod:EU",
            "ünï",
            "digitalocean_droplet.my__web",
        ] {
            let e = encode(s);
            assert!(check_tag(&format!("berth-addr:{e}")).is_ok(), "{s} → {e}");
            assert_eq!(
                e,
                e.to_ascii_lowercase(),
                "{s} → {e} must survive case folding"
            );
            assert_eq!(decode(&e).as_deref(), Some(s), "{s} → {e}");
        }
    }

    #[test]
    fn marks_need_env_and_lineage() {
        let o = owner();
        let mut tags = tags_for(Kind::Droplet, &o, "digitalocean_droplet.web", "ab12").unwrap();
        tags.push("web".into());
        let marks = owned_marks(Kind::Droplet, &o, &tags).unwrap();
        assert_eq!(marks.address.as_deref(), Some("digitalocean_droplet.web"));
        assert_eq!(marks.config_hash.as_deref(), Some("ab12"));
        assert!(owned_marks(Kind::Firewall, &o, &tags).is_none());
        let other = Ownership {
            env: "dev".into(),
            ..o.clone()
        };
        assert!(owned_marks(Kind::Droplet, &other, &tags).is_none());
        assert_eq!(user_tags(&tags), vec!["web".to_owned()]);
        assert_eq!(berth_tags_of(Kind::Droplet, &tags).len(), 4);
    }

    #[test]
    fn full_hash_fits() {
        let hash = "f".repeat(64);
        let tags = tags_for(Kind::Firewall, &owner(), "digitalocean_firewall.web", &hash).unwrap();
        assert!(tags.iter().all(|t| check_tag(t).is_ok()));
        assert!(tags.contains(&format!("berth-fw-cfg:{hash}")));
        let long = format!("digitalocean_droplet.{}", "x".repeat(300));
        assert!(tags_for(Kind::Droplet, &owner(), &long, &hash).is_err());
    }

    #[test]
    fn reserved_tags_are_refused() {
        assert_eq!(check_user_tags(&["Berth-x".into()]).len(), 1);
        assert_eq!(check_user_tags(&["a b".into()]).len(), 1);
        assert!(check_user_tags(&["env:prod".into(), "web_1".into()]).is_empty());
    }
}
