//! The vocabulary a GGUF file carries (`tokenizer.ggml.tokens`, token types,
//! BOS/EOS/unknown ids), shared by the BPE and SentencePiece tokenizers.

use std::collections::HashMap;

use super::special::SpecialTokens;
use super::{TokenId, TokenizerError};
use crate::gguf::{GgufFile, MetadataValue};

/// GGUF token types (llama.cpp's `llama_token_type`).
pub(super) const TOKEN_TYPE_NORMAL: u64 = 1;
pub(super) const TOKEN_TYPE_UNKNOWN: u64 = 2;
pub(super) const TOKEN_TYPE_CONTROL: u64 = 3;
pub(super) const TOKEN_TYPE_USER_DEFINED: u64 = 4;
pub(super) const TOKEN_TYPE_BYTE: u64 = 6;

/// Token texts, their kinds and the ids the model treats specially.
#[derive(Debug)]
pub(super) struct Vocab {
    pub(super) tokens: Vec<String>,
    pub(super) types: Vec<u64>,
    pub(super) ids: HashMap<String, TokenId>,
    /// Control, user-defined and unknown tokens, matched literally in text
    /// (as llama.cpp does) so a chat template's markers become their ids.
    pub(super) special: SpecialTokens,
    pub(super) bos: Option<TokenId>,
    pub(super) eos: Option<TokenId>,
    pub(super) unknown: Option<TokenId>,
    pub(super) add_bos: bool,
}

pub(super) fn invalid(file: &GgufFile, what: String) -> TokenizerError {
    TokenizerError::Invalid {
        path: file.path().display().to_string(),
        what,
    }
}

/// The array `key`, each element converted by `convert` (`None` = wrong type).
pub(super) fn array<T>(
    file: &GgufFile,
    key: &str,
    convert: impl Fn(&MetadataValue) -> Option<T>,
) -> Result<Vec<T>, TokenizerError> {
    let values = file
        .get(key)
        .and_then(MetadataValue::as_array)
        .ok_or_else(|| invalid(file, format!("`{key}` is missing or not an array")))?;
    values
        .iter()
        .map(|v| convert(v).ok_or_else(|| invalid(file, format!("`{key}` holds a wrong type"))))
        .collect()
}

pub(super) fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>, TokenizerError> {
    array(file, key, |v| v.as_str().map(str::to_owned))
}

impl Vocab {
    pub(super) fn from_gguf(
        file: &GgufFile,
        add_bos_default: bool,
    ) -> Result<Self, TokenizerError> {
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match file.get("tokenizer.ggml.token_type") {
            Some(_) => array(file, "tokenizer.ggml.token_type", MetadataValue::as_u64)?,
            None => vec![TOKEN_TYPE_NORMAL; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(invalid(
                file,
                format!("{} token types for {} tokens", types.len(), tokens.len()),
            ));
        }
        // As llama.cpp: the last of duplicate texts wins.
        let ids: HashMap<String, TokenId> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as TokenId))
            .collect();
        let special = SpecialTokens::new(
            tokens
                .iter()
                .zip(&types)
                .enumerate()
                .filter(|(_, (_, t))| {
                    matches!(
                        **t,
                        TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN
                    )
                })
                .map(|(id, (text, _))| (text.clone(), id as TokenId))
                .collect(),
        );
        let id_key = |key: &str| -> Result<Option<TokenId>, TokenizerError> {
            match file.get(key).and_then(MetadataValue::as_u64) {
                None => Ok(None),
                Some(id) if (id as usize) < tokens.len() => Ok(Some(id as TokenId)),
                Some(id) => Err(invalid(
                    file,
                    format!("`{key}` {id} is outside the vocabulary"),
                )),
            }
        };
        Ok(Vocab {
            unknown: id_key("tokenizer.ggml.unknown_token_id")?,
            bos: id_key("tokenizer.ggml.bos_token_id")?,
            eos: id_key("tokenizer.ggml.eos_token_id")?,
            add_bos: file
                .get("tokenizer.ggml.add_bos_token")
                .and_then(MetadataValue::as_bool)
                .unwrap_or(add_bos_default),
            tokens,
            types,
            ids,
            special,
        })
    }

    /// Whether `id` is a control, user-defined or unknown token.
    pub(super) fn is_special(&self, id: TokenId) -> bool {
        matches!(
            self.types.get(id as usize),
            Some(&(TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN))
        )
    }

    pub(super) fn id(&self, text: &str) -> Option<TokenId> {
        self.ids.get(text).copied()
    }
}
