//! [`FfnHook`]: the points where activation sparsification (CHESS, CATS,
//! top-k) and its calibration see and change a block's activations.

use std::fmt;

use candle_core::Tensor;

use crate::Result;

/// A hook on a block's activations. Mainly the gated FFN's: given block
/// `block`'s `a_gate = silu(x W_gateᵀ)` and `a_up = x W_upᵀ`
/// (`[.., intermediate]`), [`gate`](Self::gate) returns the gate activation
/// the block multiplies with `a_up`. Activation sparsification (CHESS, CATS,
/// top-k) zeroes entries of `a_gate` here, which zeroes the matching inputs
/// of the down projection; a calibration hook records the distributions and
/// returns `a_gate` unchanged.
///
/// Two more points in attention, both unchanged by default, serve CHESS's
/// selective sparsification: the query projection's input and the output
/// projection's input. Keys and values always see the dense input (they are
/// cached and reused by every later token).
pub trait FfnHook: Send + Sync + fmt::Debug {
    /// The gate activation to use.
    ///
    /// # Errors
    /// The hook's own tensor errors.
    fn gate(&self, block: usize, gate: &Tensor, up: &Tensor) -> Result<Tensor>;

    /// The input of block `block`'s query projection, given the normed
    /// hidden state `h` (`[.., hidden]`).
    ///
    /// # Errors
    /// The hook's own tensor errors.
    fn query_input(&self, block: usize, h: &Tensor) -> Result<Tensor> {
        let _ = block;
        Ok(h.clone())
    }

    /// The input of block `block`'s output projection, given the
    /// concatenated head outputs `attn` (`[.., heads · head_dim]`).
    ///
    /// # Errors
    /// The hook's own tensor errors.
    fn attention_output(&self, block: usize, attn: &Tensor) -> Result<Tensor> {
        let _ = block;
        Ok(attn.clone())
    }
}
