//! Tokenizers, through the `tokenizers` crate: loaded from `tokenizer.json` or
//! rebuilt from the vocabulary, merges and special tokens that a GGUF file carries.

use std::path::Path;

use tensorpress_io::gguf::GgufFile;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::{Error, Result};

/// GGUF token types (`tokenizer.ggml.token_type`), as llama.cpp defines them.
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// A tokenizer plus what the model expects around a text (BOS).
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl TextTokenizer {
    /// Wraps a `tokenizers` tokenizer.
    pub fn new(inner: Tokenizer) -> Self {
        TextTokenizer { inner }
    }

    /// Loads a `tokenizer.json`, with padding and truncation switched off (the
    /// callers decide about lengths).
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(Error::tokenizer)?;
        inner.with_padding(None);
        inner.with_truncation(None).map_err(Error::tokenizer)?;
        Ok(TextTokenizer { inner })
    }

    /// Rebuilds the tokenizer a GGUF file describes. Supports byte-level BPE
    /// vocabularies (`tokenizer.ggml.model = gpt2`) with the pre-tokenizers
    /// llama.cpp knows as `default`, `gpt2` and `smollm`/`starcoder`-style
    /// (digits split one by one, then the GPT-2 pattern).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::UnsupportedTokenizer(format!(
                "tokenizer.ggml.model = `{model}` (supported: gpt2 byte-level BPE)"
            )));
        }
        let pre = match gguf.get("tokenizer.ggml.pre") {
            Some(_) => gguf.get_str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let split_digits = match pre {
            "default" | "gpt2" | "mpt" | "olmo" => false,
            "smollm" | "starcoder" | "refact" | "codeshell" | "exaone" | "minerva" => true,
            other => {
                return Err(Error::UnsupportedTokenizer(format!(
                    "pre-tokenizer `{other}` (supported: default, gpt2, smollm, starcoder)"
                )))
            }
        };
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
        let types = match gguf.get("tokenizer.ggml.token_type") {
            Some(_) => gguf.get_i32_array("tokenizer.ggml.token_type")?,
            None => Vec::new(),
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        if vocab.len() != tokens.len() {
            return Err(Error::UnsupportedTokenizer(
                "the vocabulary holds duplicate tokens".into(),
            ));
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        Error::UnsupportedTokenizer(format!("merge `{m}` is not two tokens"))
                    })
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(Error::tokenizer)?;
        let mut inner = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tok: PreTokenizerWrapper = if split_digits {
            let digits = Split::new(
                SplitPattern::Regex(r"\p{N}".into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(Error::tokenizer)?;
            Sequence::new(vec![digits.into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == TOKEN_TYPE_CONTROL || t == TOKEN_TYPE_USER_DEFINED)
            .filter_map(|(i, &t)| {
                tokens
                    .get(i)
                    .map(|s| AddedToken::from(s.to_string(), t == TOKEN_TYPE_CONTROL))
            })
            .collect();
        inner.add_special_tokens(&special);
        Ok(TextTokenizer { inner })
    }

    /// Token ids of `text`, without BOS/EOS or any other added token.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(Error::tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text` with the tokenizer's own post-processing
    /// (e.g. BERT's `[CLS] … [SEP]`).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(Error::tokenizer)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(Error::tokenizer)
    }

    /// The id of `token`, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Serializes as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(Error::tokenizer)
    }
}
