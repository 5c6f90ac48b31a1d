//! Creation, as a profile describes it: where to POST, the body to send, where the new job's
//! id (or ids: a HeyGen v3 create makes one job per language) is in the answer.
//!
//! The body is a JSON template. A string that is exactly `"{name}"` is replaced by the
//! parameter `name` (any JSON value: a string, a number, a list of languages), and the
//! creation fails before anything is sent when it is missing; `"{name?}"` is optional: without
//! the parameter, the field (or list item) is left out. Everything else is sent as written.
//! So one command line — `--video-url`, `--language`, `--title`, `--param name=value` —
//! creates jobs in any dialect whose profile has a template, with no code per dialect.

use serde_json::{Map, Value};

use super::Create;
use crate::error::Error;

/// Parameters for a creation template, by name.
pub(crate) type Params = Map<String, Value>;

/// What a template string asks for: `"{name}"` or `"{name?}"`.
fn placeholder(text: &str) -> Option<(&str, bool)> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    let (name, optional) = match inner.strip_suffix('?') {
        Some(name) => (name, true),
        None => (inner, false),
    };
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    plain.then_some((name, optional))
}

/// The template with the parameters in; `None` for an optional placeholder left out.
fn fill(template: &Value, params: &Params) -> Result<Option<Value>, Error> {
    Ok(Some(match template {
        Value::String(text) => match placeholder(text) {
            Some((name, optional)) => match params.get(name) {
                Some(value) => value.clone(),
                None if optional => return Ok(None),
                None => {
                    return Err(Error::config(
                        "create",
                        format!("this profile's create needs the parameter `{name}`"),
                    ));
                }
            },
            None => template.clone(),
        },
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.extend(fill(item, params)?);
            }
            Value::Array(out)
        }
        Value::Object(fields) => {
            let mut out = Map::new();
            for (key, value) in fields {
                if let Some(value) = fill(value, params)? {
                    out.insert(key.clone(), value);
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }))
}

impl Create {
    /// The body to send: the template filled with `params` (`{}` without a template).
    pub(crate) fn body(&self, params: &Params) -> Result<Value, Error> {
        match &self.body {
            Some(template) => Ok(fill(template, params)?.unwrap_or(Value::Null)),
            None => Ok(Value::Object(Map::new())),
        }
    }

    /// The ids in a creation answer: the string (or number) at the ids pointer, or every one
    /// in the list there. At most `max`; none is an error of the answer.
    pub(crate) fn ids(&self, answer: &Value, max: usize) -> Option<Vec<String>> {
        let one = |value: &Value| match value {
            Value::String(s) if !s.is_empty() && s.len() <= super::decode::MAX_ID => {
                Some(s.clone())
            }
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let ids: Vec<String> = match answer.pointer(&self.ids)? {
            Value::Array(items) => items.iter().take(max).filter_map(one).collect(),
            value => one(value).into_iter().collect(),
        };
        (!ids.is_empty()).then_some(ids)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn params(value: Value) -> Params {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn placeholders_are_filled_and_optional_ones_left_out() {
        let template = json!({
            "video": {"type": "url", "url": "{video_url}"},
            "output_languages": "{languages}",
            "title": "{title?}",
            "tags": ["fixed", "{tag?}"],
            "literal": "{not a placeholder}",
            "n": 3
        });
        let filled = fill(
            &template,
            &params(json!({"video_url": "https://v/x.mp4", "languages": ["de", "ja"]})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            filled,
            json!({
                "video": {"type": "url", "url": "https://v/x.mp4"},
                "output_languages": ["de", "ja"],
                "tags": ["fixed"],
                "literal": "{not a placeholder}",
                "n": 3
            })
        );
        let err = fill(&template, &params(json!({"languages": []}))).unwrap_err();
        assert!(err.to_string().contains("`video_url`"), "{err}");
    }

    #[test]
    fn ids_are_one_or_many() {
        let create = |ids: &str| Create {
            url: super::super::template::Template::new("t", "/x", false).unwrap(),
            ids: ids.to_owned(),
            idempotency_key: false,
            body: None,
        };
        let answer = json!({"data": {"one": "j-1", "many": ["a", "b", 7, null], "none": []}});
        assert_eq!(
            create("/data/one").ids(&answer, 10),
            Some(vec!["j-1".into()])
        );
        assert_eq!(
            create("/data/many").ids(&answer, 10),
            Some(vec!["a".into(), "b".into(), "7".into()])
        );
        assert_eq!(create("/data/many").ids(&answer, 1), Some(vec!["a".into()]));
        assert_eq!(create("/data/none").ids(&answer, 10), None);
        assert_eq!(create("/data/missing").ids(&answer, 10), None);
    }
}
