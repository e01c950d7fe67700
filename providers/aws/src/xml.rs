//! EC2 Query API replies: XML read with `quick-xml`'s serde support into
//! the few fields berth uses (unknown elements are skipped), the
//! `<xxxSet><item>..</item></xxxSet>` list shape, tag sets, and the error
//! document (`<Response><Errors><Error><Code>`, or `<ErrorResponse>` as
//! moto sends when its authentication is on) read by a tolerant scan.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// An EC2 list: `<fooSet><item>..</item><item>..</item></fooSet>`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub(crate) struct Items<T> {
    #[serde(default = "Vec::new")]
    pub(crate) item: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self { item: Vec::new() }
    }
}

/// One `<item><key>..</key><value>..</value></item>` of a `tagSet`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
pub(crate) struct Tag {
    pub(crate) key: String,
    pub(crate) value: String,
}

/// A tag set as a map.
pub(crate) fn tag_map(tags: &Items<Tag>) -> BTreeMap<String, String> {
    tags.item
        .iter()
        .map(|t| (t.key.clone(), t.value.clone()))
        .collect()
}

/// `Some(s)` unless `s` is absent or empty (`<dnsName/>`).
pub(crate) fn present(s: &Option<String>) -> Option<String> {
    s.as_ref()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Parses a reply into `T`.
pub(crate) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    quick_xml::de::from_str(text).map_err(|e| e.to_string())
}

/// What an AWS error document says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorFields {
    pub(crate) code: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) request_id: Option<String>,
}

/// The first `Code`, `Message` and `RequestID`/`RequestId` elements of an
/// XML error document, wherever they are.
pub(crate) fn error_fields(text: &str) -> ErrorFields {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = ErrorFields::default();
    let mut current: Option<String> = None;
    let mut buf = String::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                current = Some(e.local_name().as_ref().to_owned());
                buf.clear();
            }
            Ok(Event::Text(t)) => buf.push_str(&t.xml10_content()),
            Ok(Event::CData(t)) => buf.push_str(t.as_ref()),
            Ok(Event::GeneralRef(r)) => {
                // An entity such as `&apos;` or `&#39;` inside a message.
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    buf.push(c);
                } else {
                    buf.push_str(match r.as_ref() {
                        "apos" => "'",
                        "quot" => "\"",
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        _ => "",
                    });
                }
            }
            Ok(Event::End(_)) => {
                let slot = match current.take().as_deref() {
                    Some("Code") => &mut out.code,
                    Some("Message") => &mut out.message,
                    Some("RequestID" | "RequestId" | "requestId") => &mut out.request_id,
                    _ => {
                        buf.clear();
                        continue;
                    }
                };
                let value = buf.trim();
                if slot.is_none() && !value.is_empty() {
                    *slot = Some(value.to_owned());
                }
                buf.clear();
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Thing {
        tag_set: Items<Tag>,
        dns_name: Option<String>,
        next_token: Option<String>,
    }

    #[test]
    fn lists_tags_and_empty_elements() {
        let t: Thing = parse(
            r#"<?xml version="1.0" encoding="utf-8"?>
            <R xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><tagSet><item><key>berth:env</key><value>prod</value></item><item><key>empty</key><value/></item></tagSet><dnsName/><other><x>1</x></other></R>"#,
        )
        .unwrap();
        let tags = tag_map(&t.tag_set);
        assert_eq!(tags["berth:env"], "prod");
        assert_eq!(tags["empty"], "");
        assert_eq!(present(&t.dns_name), None);
        assert_eq!(t.next_token, None);
        let t: Thing = parse("<R><tagSet/></R>").unwrap();
        assert!(t.tag_set.item.is_empty());
    }

    #[test]
    fn error_documents_in_both_shapes() {
        let e = error_fields(
            r#"<?xml version="1.0" encoding="utf-8"?>
<Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><Errors><Error><Code>InvalidAMIID.NotFound</Code><Message>The image id '[ami-00000001]' does not exist</Message></Error></Errors><RequestID>r-1</RequestID></Response>"#,
        );
        assert_eq!(e.code.as_deref(), Some("InvalidAMIID.NotFound"));
        assert_eq!(
            e.message.as_deref(),
            Some("The image id '[ami-00000001]' does not exist")
        );
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        let e = error_fields(
            "<ErrorResponse><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able &amp; so on, &apos;x&#39;</Message><Type>Sender</Type></Error></Errors></ErrorResponse>",
        );
        assert_eq!(e.code.as_deref(), Some("AuthFailure"));
        assert_eq!(e.message.as_deref(), Some("AWS was not able & so on, 'x'"));
        assert_eq!(e.request_id, None);
        assert_eq!(error_fields("not xml at all"), ErrorFields::default());
    }
}
