//! Data-parallel training of a small transformer language model on State of
//! the Union text, with the gradients exchanged dense, through DGC and through
//! PowerSGD (issue 9).
//!
//! ```text
//! cargo run --release --example dp_train_sotu
//! STEPS=300 WORKERS=4 cargo run --release --example dp_train_sotu
//! STEPS=1000 METHODS=dense,dgc cargo run --release --example dp_train_sotu
//! ```
//!
//! A byte-level GPT (candle; 2 blocks of width 128, 4 heads, context 64, tied
//! embeddings) learns SOTU 1990–2009. `WORKERS` ranks each own a contiguous
//! shard of the text and draw their own batches; every step each rank
//! computes its gradient (candle's autograd), the ranks average them through
//! one compressor per parameter tensor and rank (`tensorpress::codecs::grad`,
//! run in process by `exchange` with the collective each payload asks for:
//! all-reduce for dense values and PowerSGD's factors, all-gather for DGC's
//! sparse values), and all ranks apply the same SGD update. Every method runs
//! the same steps from the same initialization and batches; the table reports
//! the mean loss of the last 20 steps, the loss on held-out text (SOTU
//! 2017–2021), the bytes each rank sent, and the bytes per step once DGC's
//! warm-up is over (from step 40). `METHODS` picks the runs (`dense` first),
//! `LR` the learning rate (0.02), `CLIP` a local clipping norm (each rank's
//! gradient scaled to at most that global norm before the exchange; 0, the
//! default, turns it off).
//!
//! - dense: plain all-reduce, SGD with momentum 0.9;
//! - DGC (Lin et al., *Deep Gradient Compression*, ICLR 2018): 99.9 %
//!   sparsity after an exponential warm-up (75 % → 99.9 % over the first
//!   steps), momentum correction and factor masking inside the compressor, so
//!   the optimizer applies its output without momentum;
//! - PowerSGD (Vogels et al., NeurIPS 2019): rank 4 with warm start and error
//!   feedback; vectors (biases, norms) go uncompressed as the paper does.
//!
//! By default the ranks are simulated in one process (`exchange`). Built with
//! the `mpi` feature and started by `mpirun`, every process is one rank and
//! the payloads travel through MPI (`exchange_over` on `Mpi`: `MPI_Allreduce`
//! for dense values and PowerSGD's factors, `MPI_Allgatherv` for DGC's sparse
//! ones); the shards, batches and results are those of the simulation with as
//! many ranks (all-reduced sums may round differently in the last bits):
//!
//! ```text
//! cargo build --release --features mpi --example dp_train_sotu
//! STEPS=300 RAYON_NUM_THREADS=1 mpirun -np 4 target/release/examples/dp_train_sotu
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var, D};
use ndarray::{ArrayD, IxDyn};
use tensorpress::codecs::grad::{
    exchange, Dgc, DgcConfig, GradCompressor, Identity, PowerSgd, PowerSgdConfig, SparsityWarmup,
};
#[cfg(feature = "mpi")]
use tensorpress::codecs::grad::{exchange_over, Communicator, Mpi};
use tensorpress::io::testdata;
use tensorpress::tensor::SeededRng;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const VOCAB: usize = 256;
const WIDTH: usize = 128;
const HEADS: usize = 4;
const BLOCKS: usize = 2;
const CTX: usize = 64;
const BATCH: usize = 8;
const MOMENTUM: f64 = 0.9;

/// The model's parameters by name (sorted, so every run visits them in the
/// same order).
struct Gpt {
    params: BTreeMap<String, Var>,
}

impl Gpt {
    fn new(seed: u64) -> Res<Self> {
        let mut rng = SeededRng::new(seed);
        let mut params = BTreeMap::new();
        let dev = Device::Cpu;
        let mut normal = |name: &str, shape: &[usize], std: f32| -> Res<()> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| rng.normal_f64() as f32 * std).collect();
            let t = Tensor::from_vec(data, shape, &dev)?;
            params.insert(name.to_string(), Var::from_tensor(&t)?);
            Ok(())
        };
        normal("embed", &[VOCAB, WIDTH], 0.02)?;
        normal("pos", &[CTX, WIDTH], 0.02)?;
        let proj = 0.02 / (2.0 * BLOCKS as f32).sqrt();
        for b in 0..BLOCKS {
            normal(&format!("b{b}.qkv"), &[3 * WIDTH, WIDTH], 0.02)?;
            normal(&format!("b{b}.out"), &[WIDTH, WIDTH], proj)?;
            normal(&format!("b{b}.up"), &[4 * WIDTH, WIDTH], 0.02)?;
            normal(&format!("b{b}.down"), &[WIDTH, 4 * WIDTH], proj)?;
        }
        for b in 0..BLOCKS {
            for (name, value) in [
                ("ln1.w", 1.0f32),
                ("ln1.b", 0.0),
                ("ln2.w", 1.0),
                ("ln2.b", 0.0),
            ] {
                let t = Tensor::full(value, WIDTH, &dev)?;
                params.insert(format!("b{b}.{name}"), Var::from_tensor(&t)?);
            }
        }
        params.insert(
            "lnf.w".into(),
            Var::from_tensor(&Tensor::ones(WIDTH, DType::F32, &dev)?)?,
        );
        params.insert(
            "lnf.b".into(),
            Var::from_tensor(&Tensor::zeros(WIDTH, DType::F32, &dev)?)?,
        );
        Ok(Gpt { params })
    }

    fn p(&self, name: &str) -> &Tensor {
        self.params[name].as_tensor()
    }

    fn layer_norm(&self, x: &Tensor, prefix: &str) -> Res<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        Ok(xn
            .broadcast_mul(self.p(&format!("{prefix}.w")))?
            .broadcast_add(self.p(&format!("{prefix}.b")))?)
    }

    /// Mean next-byte cross-entropy of `tokens` (`[batch, CTX + 1]`).
    fn loss(&self, tokens: &Tensor) -> Res<Tensor> {
        let (b, _) = tokens.dims2()?;
        let input = tokens.narrow(1, 0, CTX)?;
        let target = tokens.narrow(1, 1, CTX)?;
        let mut x = self
            .p("embed")
            .index_select(&input.flatten_all()?, 0)?
            .reshape((b, CTX, WIDTH))?
            .broadcast_add(self.p("pos"))?;
        let hd = WIDTH / HEADS;
        let mask: Vec<f32> = (0..CTX)
            .flat_map(|i| (0..CTX).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (CTX, CTX), &Device::Cpu)?;
        for blk in 0..BLOCKS {
            let h = self.layer_norm(&x, &format!("b{blk}.ln1"))?;
            let qkv = h.broadcast_matmul(&self.p(&format!("b{blk}.qkv")).t()?)?;
            let heads = |i: usize| -> Res<Tensor> {
                Ok(qkv
                    .narrow(2, i * WIDTH, WIDTH)?
                    .reshape((b, CTX, HEADS, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, CTX, WIDTH))?;
            x = (x + y.broadcast_matmul(&self.p(&format!("b{blk}.out")).t()?)?)?;
            let h = self.layer_norm(&x, &format!("b{blk}.ln2"))?;
            let h = h
                .broadcast_matmul(&self.p(&format!("b{blk}.up")).t()?)?
                .gelu()?;
            x = (x + h.broadcast_matmul(&self.p(&format!("b{blk}.down")).t()?)?)?;
        }
        let x = self.layer_norm(&x, "lnf")?;
        let logits = x.broadcast_matmul(&self.p("embed").t()?)?;
        let logits = logits.reshape((b * CTX, VOCAB))?;
        Ok(candle_nn::loss::cross_entropy(
            &logits,
            &target.flatten_all()?,
        )?)
    }
}

/// `BATCH` windows of `CTX + 1` bytes from `text`, at offsets from `rng`.
fn batch(text: &[u8], rng: &mut SeededRng) -> Res<Tensor> {
    let mut data = Vec::with_capacity(BATCH * (CTX + 1));
    for _ in 0..BATCH {
        let start = rng.below((text.len() - CTX - 1) as u64) as usize;
        data.extend(text[start..start + CTX + 1].iter().map(|&c| u32::from(c)));
    }
    Ok(Tensor::from_vec(data, (BATCH, CTX + 1), &Device::Cpu)?)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Dense,
    Dgc,
    PowerSgd,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Dense => "dense (all-reduce)",
            Method::Dgc => "DGC 99.9 % (warm-up, momentum correction)",
            Method::PowerSgd => "PowerSGD rank 4",
        }
    }

    fn compressor(self, shape: &[usize], index: usize) -> Res<Box<dyn GradCompressor>> {
        Ok(match self {
            Method::Dense => Box::new(Identity),
            Method::Dgc => Box::new(Dgc::new(
                DgcConfig::default()
                    .with_momentum(MOMENTUM as f32)
                    .with_warmup(Some(SparsityWarmup {
                        stages: 5,
                        steps_per_stage: 8,
                    })),
            )?),
            // Vectors go dense: a rank-4 factorization does not shrink them.
            Method::PowerSgd if shape.len() < 2 => Box::new(Identity),
            Method::PowerSgd => Box::new(PowerSgd::new(PowerSgdConfig {
                rank: 4,
                seed: index as u64,
                ..Default::default()
            })?),
        })
    }

    /// DGC's compressor already applies momentum (its momentum correction).
    fn optimizer_momentum(self) -> f64 {
        if self == Method::Dgc {
            0.0
        } else {
            MOMENTUM
        }
    }
}

/// Where the ranks run.
enum Engine {
    /// All ranks in this process.
    Simulated { ranks: usize },
    /// This process is one rank of an MPI job.
    #[cfg(feature = "mpi")]
    Mpi(Mpi),
}

impl Engine {
    fn ranks(&self) -> usize {
        match self {
            Engine::Simulated { ranks } => *ranks,
            #[cfg(feature = "mpi")]
            Engine::Mpi(mpi) => mpi.size(),
        }
    }

    /// The ranks whose gradients this process computes.
    fn local(&self) -> std::ops::Range<usize> {
        match self {
            Engine::Simulated { ranks } => 0..*ranks,
            #[cfg(feature = "mpi")]
            Engine::Mpi(mpi) => mpi.rank()..mpi.rank() + 1,
        }
    }

    /// Whether this process prints the results.
    fn root(&self) -> bool {
        self.local().start == 0
    }

    /// The sum over all ranks of a value summed over this process's ranks.
    fn total(&self, local: f64) -> Res<f64> {
        match self {
            Engine::Simulated { .. } => Ok(local),
            #[cfg(feature = "mpi")]
            Engine::Mpi(mpi) => {
                let mut v = [local];
                mpi.all_reduce_sum_f64(&mut v)?;
                Ok(v[0])
            }
        }
    }

    /// The averaged gradient of parameter tensor `i` and the bytes rank 0 sent.
    fn exchange(
        &self,
        workers: &mut [Box<dyn GradCompressor>],
        grads: &[Vec<ArrayD<f32>>],
        i: usize,
    ) -> Res<(ArrayD<f32>, usize)> {
        match self {
            Engine::Simulated { .. } => {
                let views: Vec<_> = grads.iter().map(|g| g[i].view()).collect();
                let out = exchange(workers, &views)?;
                Ok((out.mean, out.bytes_sent[0]))
            }
            #[cfg(feature = "mpi")]
            Engine::Mpi(mpi) => {
                let out = exchange_over(mpi, &mut workers[0], grads[0][i].view())?;
                Ok((out.mean, out.bytes_sent))
            }
        }
    }
}

struct Run {
    final_loss: f64,
    held_out: f64,
    bytes_per_rank: usize,
    /// Bytes per rank and step from step [`STEADY_FROM`] on (after DGC's warm-up).
    steady_bytes_per_step: f64,
    seconds: f64,
}

/// The first step after DGC's sparsity warm-up (5 stages of 8 steps).
const STEADY_FROM: usize = 40;

fn held_out_loss(model: &Gpt, text: &[u8]) -> Res<f64> {
    let mut rng = SeededRng::new(999);
    let mut total = 0.0;
    for _ in 0..16 {
        total += f64::from(model.loss(&batch(text, &mut rng)?)?.to_scalar::<f32>()?);
    }
    Ok(total / 16.0)
}

fn train(
    engine: &Engine,
    method: Method,
    shards: &[&[u8]],
    held_out: &[u8],
    steps: usize,
    lr: f64,
    clip: f64,
) -> Res<Run> {
    let t = Instant::now();
    let model = Gpt::new(7)?;
    let names: Vec<String> = model.params.keys().cloned().collect();
    let mut velocity: Vec<ArrayD<f32>> = names
        .iter()
        .map(|n| ArrayD::zeros(IxDyn(model.params[n].dims())))
        .collect();
    let mut workers: Vec<Vec<Box<dyn GradCompressor>>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            engine
                .local()
                .map(|_| method.compressor(model.params[n].dims(), i))
                .collect::<Res<Vec<_>>>()
        })
        .collect::<Res<_>>()?;
    let mut rngs: Vec<SeededRng> = engine
        .local()
        .map(|r| SeededRng::new(100 + r as u64))
        .collect();
    let mut bytes = 0usize;
    let mut steady_bytes = 0usize;
    let mut recent = Vec::new();
    let mom = method.optimizer_momentum() as f32;
    for step in 0..steps {
        // Each rank's gradient of each parameter.
        let mut grads: Vec<Vec<ArrayD<f32>>> = Vec::with_capacity(rngs.len());
        let mut local_loss = 0.0;
        for (shard, rng) in shards[engine.local()].iter().zip(&mut rngs) {
            let loss = model.loss(&batch(shard, rng)?)?;
            local_loss += f64::from(loss.to_scalar::<f32>()?);
            let store = loss.backward()?;
            let mut g = Vec::with_capacity(names.len());
            for n in &names {
                let var = &model.params[n];
                let grad = store
                    .get(var.as_tensor())
                    .ok_or_else(|| format!("no gradient for {n}"))?;
                let data = grad.flatten_all()?.to_vec1::<f32>()?;
                g.push(ArrayD::from_shape_vec(IxDyn(var.dims()), data)?);
            }
            if clip > 0.0 {
                // Local clipping: each rank scales its own gradient to a global
                // norm of at most `clip` before the exchange (every method alike).
                let norm = g
                    .iter()
                    .map(|a| a.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
                    .sum::<f64>()
                    .sqrt();
                if norm > clip {
                    let s = (clip / norm) as f32;
                    g.iter_mut().for_each(|a| a.mapv_inplace(|v| v * s));
                }
            }
            grads.push(g);
        }
        let step_loss = engine.total(local_loss)? / shards.len() as f64;
        recent.push(step_loss);
        if recent.len() > 20 {
            recent.remove(0);
        }
        // Exchange and update, parameter by parameter.
        for (i, n) in names.iter().enumerate() {
            let (mean, sent) = engine.exchange(&mut workers[i], &grads, i)?;
            bytes += sent;
            if step >= STEADY_FROM {
                steady_bytes += sent;
            }
            let v = &mut velocity[i];
            *v *= mom;
            *v += &mean;
            let var = &model.params[n];
            let update = Tensor::from_vec(
                v.iter().map(|&x| -(lr as f32) * x).collect::<Vec<f32>>(),
                var.dims(),
                &Device::Cpu,
            )?;
            var.set(&(var.as_tensor() + update)?)?;
        }
        if engine.root() && (step % 50 == 0 || step + 1 == steps) {
            eprintln!(
                "  {}: step {step:>4}, loss {step_loss:.4}, {bytes} bytes sent per rank",
                method.name()
            );
        }
    }
    Ok(Run {
        final_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
        held_out: held_out_loss(&model, held_out)?,
        bytes_per_rank: bytes,
        steady_bytes_per_step: steady_bytes as f64
            / steps.saturating_sub(STEADY_FROM).max(1) as f64,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn main() -> Res<()> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    let steps: usize = env("STEPS", "300").parse()?;
    let engine = engine(env("WORKERS", "4").parse()?)?;
    let ranks = engine.ranks();
    let lr: f64 = env("LR", "0.02").parse()?;
    let clip: f64 = env("CLIP", "0").parse()?;
    if ranks == 0 || steps == 0 {
        return Err("WORKERS and STEPS must be positive".into());
    }
    // Dense first: the others are compared with it.
    let methods = env("METHODS", "dense,dgc,powersgd")
        .split(',')
        .map(|m| match m.trim() {
            "dense" => Ok(Method::Dense),
            "dgc" => Ok(Method::Dgc),
            "powersgd" => Ok(Method::PowerSgd),
            other => Err(format!(
                "METHODS: unknown method {other:?} (dense, dgc, powersgd)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if methods.first() != Some(&Method::Dense) {
        return Err("METHODS must start with dense (the baseline)".into());
    }
    let train_text = testdata::sotu_text(1990..=2009)?.into_bytes();
    let held_out = testdata::sotu_text(2017..=2021)?.into_bytes();
    let shard_len = train_text.len() / ranks;
    if shard_len < 4 * (CTX + 1) {
        return Err(format!("{ranks} ranks leave shards too short for windows of {CTX}").into());
    }
    let shards: Vec<&[u8]> = train_text.chunks(shard_len).take(ranks).collect();
    let params: usize = Gpt::new(7)?.params.values().map(|v| v.elem_count()).sum();
    let root = engine.root();
    let say = |line: String| {
        if root {
            println!("{line}");
        }
    };
    say(format!(
        "byte-level GPT, {BLOCKS} blocks of {WIDTH}, {HEADS} heads, context {CTX}: {params} \
         parameters; {ranks} ranks × batch {BATCH}, {steps} steps of SGD (lr {lr}, local clipping {clip}, 0 = none); SOTU \
         1990–2009 ({} bytes) split into {ranks} shards, held out: SOTU 2017–2021; {}\n",
        train_text.len(),
        match &engine {
            Engine::Simulated { .. } => "ranks simulated in one process",
            #[cfg(feature = "mpi")]
            Engine::Mpi(_) => "one MPI process per rank",
        }
    ));
    say(format!(
        "| method | loss, last 20 steps | held-out loss | vs dense | bytes sent per rank | vs dense | bytes per step from step {STEADY_FROM} | vs dense | time |"
    ));
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|".into());
    let mut dense: Option<Run> = None;
    for method in methods {
        let run = train(&engine, method, &shards, &held_out, steps, lr, clip)?;
        let base = dense.as_ref().unwrap_or(&run);
        say(format!(
            "| {} | {:.4} | {:.4} | {:+.2} % | {} | {:.1}× less | {:.0} | {:.1}× less | {:.0} s |",
            method.name(),
            run.final_loss,
            run.held_out,
            100.0 * (run.held_out / base.held_out - 1.0),
            run.bytes_per_rank,
            base.bytes_per_rank as f64 / run.bytes_per_rank as f64,
            run.steady_bytes_per_step,
            base.steady_bytes_per_step / run.steady_bytes_per_step.max(1.0),
            run.seconds
        ));
        if dense.is_none() {
            dense = Some(run);
        }
    }
    Ok(())
}

/// MPI's ranks when built with `mpi` and started by `mpirun`, else `workers`
/// simulated ranks.
fn engine(workers: usize) -> Res<Engine> {
    #[cfg(feature = "mpi")]
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() || std::env::var_os("PMI_SIZE").is_some()
    {
        return Ok(Engine::Mpi(Mpi::init()?));
    }
    Ok(Engine::Simulated { ranks: workers })
}
