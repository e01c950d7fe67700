//! GitLab's rules for values of masked (and masked-and-hidden) variables,
//! as the server enforces them in `Ci::Maskable`:
//! - with variable expansion (`raw = false`): `\A[a-zA-Z0-9_+=/@:.~-]{8,}\z`,
//!   i.e. the Base64 alphabet (RFC 4648, both variants) plus `@ : . ~`;
//! - with `raw = true`: `\A\S{8,}\z`, any non-whitespace character.
//!
//! Each broken rule is reported on its own so the user sees all of them at
//! once. Messages never contain the value or any of its characters. GitLab's
//! further rule that a masked value must not equal the name of an existing
//! variable is left to the server.

/// One masking rule a value breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Shorter than 8 characters.
    TooShort,
    /// Contains a space, tab or line break.
    Whitespace,
    /// Contains a character outside the allowed set (only with expansion).
    Charset,
}

/// The minimum length of a masked value, in characters.
pub(crate) const MIN_LEN: usize = 8;

/// Ruby's `\s`: ASCII whitespace only.
fn is_ruby_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

fn is_maskable_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | '/' | '@' | ':' | '.' | '~' | '-')
}

/// The rules `value` breaks when masked; `raw` relaxes the character set.
pub(crate) fn violations(value: &str, raw: bool) -> Vec<Rule> {
    let mut broken = Vec::new();
    if value.chars().count() < MIN_LEN {
        broken.push(Rule::TooShort);
    }
    if value.chars().any(is_ruby_space) {
        broken.push(Rule::Whitespace);
    }
    if !raw
        && value
            .chars()
            .any(|c| !is_ruby_space(c) && !is_maskable_char(c))
    {
        broken.push(Rule::Charset);
    }
    broken
}

impl Rule {
    /// What the rule requires, phrased for an error on `value` (`kind` is
    /// "masked" or "hidden").
    pub(crate) fn message(self, kind: &str) -> String {
        let rule = match self {
            Self::TooShort => format!("must be at least {MIN_LEN} characters long"),
            Self::Whitespace => {
                "must be a single line without spaces, tabs or line breaks".to_owned()
            }
            Self::Charset => {
                "may contain only letters, digits and the characters _ + = / @ : . ~ - \
                 (the Base64 alphabet plus @ : . ~) unless `raw = true`"
                    .to_owned()
            }
        };
        format!(
            "GitLab cannot mask this value: the value of a {kind} variable {rule} \
             (the value is not shown because it is sensitive)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_examples() {
        // From GitLab's own maskable_spec.
        assert_eq!(violations("hello", false), vec![Rule::TooShort]);
        assert_eq!(violations("hello world", false), vec![Rule::Whitespace]);
        assert_eq!(
            violations("hello$VARIABLEworld", false),
            vec![Rule::Charset]
        );
        assert_eq!(violations("hello\nworld", false), vec![Rule::Whitespace]);
        assert!(violations("Hello+World_123/@:-~.", false).is_empty());
        assert!(violations("aGVsbG8gd29ybGQ=", false).is_empty());
        // raw relaxes the character set, not length or whitespace.
        assert!(violations("hello$VARIABLEworld", true).is_empty());
        assert!(violations("HelloWorld%#^", true).is_empty());
        assert_eq!(violations("hello world", true), vec![Rule::Whitespace]);
        assert_eq!(
            violations("a b$", false),
            vec![Rule::TooShort, Rule::Whitespace, Rule::Charset]
        );
    }

    #[test]
    fn length_counts_characters() {
        assert_eq!(violations("ééééééé", true), vec![Rule::TooShort]);
        assert!(violations("éééééééé", true).is_empty());
        assert_eq!(violations("éééééééé", false), vec![Rule::Charset]);
    }
}
