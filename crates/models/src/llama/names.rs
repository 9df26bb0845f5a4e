//! Tensor names of Llama checkpoints: Hugging Face module names and GGUF's.

/// How a checkpoint names the tensors of a Llama model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// Hugging Face: `model.layers.0.self_attn.q_proj.weight`.
    HuggingFace,
    /// GGUF / llama.cpp: `blk.0.attn_q.weight`.
    Gguf,
}

/// Module-name suffixes inside a block, HF spelling and GGUF spelling.
const BLOCK_MODULES: [(&str, &str); 9] = [
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("post_attention_layernorm", "ffn_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Top-level modules, HF spelling and GGUF spelling.
const TOP_MODULES: [(&str, &str); 3] = [
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("lm_head", "output"),
];

impl Naming {
    /// The weight tensor name of the module called `module` in HF naming
    /// (e.g. `model.layers.3.mlp.up_proj` → `blk.3.ffn_up.weight` for GGUF).
    /// Modules this mapping does not know keep their name plus `.weight`.
    pub fn tensor(self, module: &str) -> String {
        match self {
            Naming::HuggingFace => format!("{module}.weight"),
            Naming::Gguf => format!("{}.weight", hf_module_to_gguf(module)),
        }
    }
}

/// GGUF module name for an HF module name of a Llama model.
pub fn hf_module_to_gguf(module: &str) -> String {
    if let Some((_, g)) = TOP_MODULES.iter().find(|(h, _)| *h == module) {
        return (*g).to_string();
    }
    if let Some(rest) = module.strip_prefix("model.layers.") {
        if let Some((layer, sub)) = rest.split_once('.') {
            if let Some((_, g)) = BLOCK_MODULES.iter().find(|(h, _)| *h == sub) {
                return format!("blk.{layer}.{g}");
            }
        }
    }
    module.to_string()
}

/// HF tensor name for a GGUF tensor name of a Llama model (`blk.0.attn_q.weight`
/// → `model.layers.0.self_attn.q_proj.weight`); `None` for names outside the
/// Llama layout.
pub fn gguf_tensor_to_hf(name: &str) -> Option<String> {
    let (module, suffix) = name.rsplit_once('.')?;
    if let Some((h, _)) = TOP_MODULES.iter().find(|(_, g)| *g == module) {
        return Some(format!("{h}.{suffix}"));
    }
    let rest = module.strip_prefix("blk.")?;
    let (layer, sub) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let (h, _) = BLOCK_MODULES.iter().find(|(_, g)| *g == sub)?;
    Some(format!("model.layers.{layer}.{h}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        assert_eq!(
            Naming::Gguf.tensor("model.layers.12.self_attn.k_proj"),
            "blk.12.attn_k.weight"
        );
        assert_eq!(
            Naming::Gguf.tensor("model.embed_tokens"),
            "token_embd.weight"
        );
        assert_eq!(
            Naming::HuggingFace.tensor("model.norm"),
            "model.norm.weight"
        );
        for (h, _) in BLOCK_MODULES {
            let hf = format!("model.layers.7.{h}");
            let g = Naming::Gguf.tensor(&hf);
            assert_eq!(gguf_tensor_to_hf(&g).unwrap(), format!("{hf}.weight"));
        }
        assert_eq!(
            gguf_tensor_to_hf("output.weight").unwrap(),
            "lm_head.weight"
        );
        assert_eq!(gguf_tensor_to_hf("blk.x.attn_q.weight"), None);
        assert_eq!(gguf_tensor_to_hf("rope_freqs.weight"), None);
    }
}
