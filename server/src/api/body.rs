//! Request bodies as the API documents them: a JSON object of the expected
//! fields, nothing else. serde would read a struct from a JSON array too
//! (`["x"]` as `{"id": "x"}`), so an array, a string or a number is refused
//! before the fields are read, and nested objects go through [`object`].
//! Unknown fields are refused by `deny_unknown_fields` on every request type.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};

use super::ApiError;

/// A JSON object body read into `T`.
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json" || mime.ends_with("+json")
            });
        if !is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "not-json",
                "send the body as `content-type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state).await?;
        parse_object(&bytes).map(JsonObject)
    }
}

/// A body that must be empty or an empty JSON object: for endpoints that
/// take no fields.
#[derive(Debug)]
pub struct NoFields;

impl<S: Send + Sync> FromRequest<S> for NoFields {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Read whole even when it is refused: answering before the body is
        // read makes hyper close the connection, breaking keep-alive.
        let bytes = Bytes::from_request(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(NoFields);
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Empty {}
        parse_object::<Empty>(&bytes).map(|_| NoFields)
    }
}

/// Reads `T` from a JSON object.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => {
            return Err(ApiError::bad_request(
                "bad-json",
                "the body is empty; send a JSON object",
            ));
        }
        Some(b'[') => {
            return Err(ApiError::unprocessable(
                "bad-json",
                "the body must be a JSON object, not an array",
            ));
        }
        Some(_) => {
            return Err(ApiError::unprocessable(
                "bad-json",
                "the body must be a JSON object",
            ));
        }
    }
    serde_json::from_slice(bytes).map_err(|error| {
        if error.is_data() {
            ApiError::unprocessable("bad-json", format!("the body does not fit: {error}"))
        } else {
            ApiError::bad_request("bad-json", format!("the body is not valid JSON: {error}"))
        }
    })
}

/// `deserialize_with` for a nested struct: only a JSON object reads as one.
pub fn object<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    deserializer: D,
) -> Result<T, D::Error> {
    let fields = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
    T::deserialize(serde_json::Value::Object(fields)).map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        on: bool,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        id: String,
        #[serde(default, deserialize_with = "object")]
        inner: Inner,
    }

    #[test]
    fn only_objects_of_the_documented_fields_are_read() {
        let ok: Outer = parse_object(br#" {"id": "x", "inner": {"on": true}} "#).unwrap();
        assert_eq!(
            ok,
            Outer {
                id: "x".into(),
                inner: Inner { on: true }
            }
        );
        for (body, status) in [
            (&br#"["x"]"#[..], 422),
            (br#""x""#, 422),
            (b"7", 422),
            (b"", 400),
            (br#"{"id": "x", "extra": 1}"#, 422),
            (br#"{"id": "x", "inner": [true]}"#, 422),
            (br#"{"id": "x", "inner": {"on": true, "off": 1}}"#, 422),
            (br#"{"id": "#, 400),
        ] {
            let error = parse_object::<Outer>(body).unwrap_err();
            assert_eq!(
                error.status.as_u16(),
                status,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(error.code, "bad-json");
        }
    }
}
