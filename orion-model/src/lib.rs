//! Orion's in-process language model: a llama-architecture GGUF file (SmolLM2, Llama,
//! Qwen-style files that say `llama`) run on the CPU.
//!
//! - Weights stay in the file's quantized layout where a kernel of [`quant`] takes it (Q4_1,
//!   Q8_0); other layouts are requantized to Q8_0 at load. Activations are quantized to 8 bits
//!   per block before each matrix product, so the products are integer multiply-adds.
//! - The query, key and value matrices of a layer are stacked into one, and the gate and up
//!   matrices into another: four matrix products a layer, each split over a pool of
//!   inference threads of the model's own (rayon), whose idle threads sleep.
//! - A prompt is read in one pass (every token of it through each matrix at once), and the
//!   vocabulary's logits are computed for its last token only.
//! - The keys and values read so far are cached, growing with the context.

use std::io::{Read, Seek, SeekFrom};

use candle_core::quantized::GgmlDType;
pub use candle_core::quantized::gguf_file;

mod quant;

use quant::{ActBlock, BLOCK, Kernels, Matrix, Q4Block, Q8Block, Weights};
use rayon::prelude::*;

/// Why a model file cannot be read or run.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

fn error(why: impl std::fmt::Display) -> Error {
    Error(why.to_string())
}

/// How the weights are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// As the file ships them, where a kernel takes that layout (else Q8_0).
    Shipped,
    /// Every weight dequantized to f32, activations unquantized: the slow reference the
    /// quantized kernels are checked against.
    Reference,
}

/// The shape of the network, from the file's `llama.*` metadata.
#[derive(Clone, Debug)]
pub struct Config {
    pub layers: usize,
    pub dim: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    pub rope_base: f32,
    /// The longest context the model was trained on.
    pub context: usize,
}

impl Config {
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value, stacked.
    qkv: Matrix,
    wo: Matrix,
    ffn_norm: Vec<f32>,
    /// Gate and up, stacked.
    gate_up: Matrix,
    down: Matrix,
    /// The cached keys and values, a row of `kv_dim` per position read.
    keys: Vec<f32>,
    values: Vec<f32>,
}

/// A loaded model: its weights, its key-value cache and its threads.
pub struct Model {
    pub config: Config,
    embed: Matrix,
    /// `None`: the output matrix is the embedding's (tied).
    output: Option<Matrix>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    kernels: Kernels,
    layout: Layout,
    pool: std::sync::Arc<rayon::ThreadPool>,
    /// How many positions the cache holds.
    position: usize,
    inv_freq: Vec<f32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .field("kernels", &self.kernels.name())
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

/// The f32 value of little-endian f16 bytes.
fn f16(bytes: &[u8]) -> f32 {
    half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32()
}

/// Reads the tensors of a GGUF file.
struct Reader<'a, R> {
    content: &'a gguf_file::Content,
    file: &'a mut R,
    /// The file's length: no tensor may claim bytes past it.
    length: u64,
    layout: Layout,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn info(&self, name: &str) -> Result<&gguf_file::TensorInfo, Error> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| error(format!("no tensor `{name}` in the file")))
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The `bytes` bytes of tensor `name` (which [`Reader::bytes`] has checked).
    fn raw(&mut self, name: &str, bytes: usize) -> Result<Vec<u8>, Error> {
        let offset = self.content.tensor_data_offset + self.info(name)?.offset;
        self.file.seek(SeekFrom::Start(offset)).map_err(error)?;
        let mut out = vec![0u8; bytes];
        self.file.read_exact(&mut out).map_err(error)?;
        Ok(out)
    }

    /// The bytes tensor `name` takes in the file, which must hold them where the file says
    /// they are: checked before anything is allocated for it.
    fn bytes(&self, name: &str) -> Result<usize, Error> {
        let info = self.info(name)?;
        let dtype = info.ggml_dtype;
        let bytes = info
            .shape
            .dims()
            .iter()
            .try_fold(1usize, |n, d| n.checked_mul(*d))
            .filter(|v| v % dtype.block_size() == 0)
            .and_then(|v| (v / dtype.block_size()).checked_mul(dtype.type_size()))
            .filter(|b| {
                self.content
                    .tensor_data_offset
                    .checked_add(info.offset)
                    .and_then(|start| start.checked_add(*b as u64))
                    .is_some_and(|end| end <= self.length)
            });
        bytes.ok_or_else(|| {
            error(format!(
                "`{name}` ({:?}, {dtype:?}) does not fit in the file",
                info.shape.dims()
            ))
        })
    }

    /// Tensor `name`, which must have the shape `dims` (in rows, then columns).
    fn expect(&self, name: &str, dims: &[usize]) -> Result<(), Error> {
        let found = self.info(name)?.shape.dims();
        if found != dims {
            return Err(error(format!(
                "`{name}` is {found:?}; the file's llama.* metadata makes it {dims:?}"
            )));
        }
        self.bytes(name).map(|_| ())
    }

    /// A vector of `len` values as f32.
    fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>, Error> {
        self.expect(name, &[len])?;
        self.floats(name)
    }

    /// Every value of a tensor as f32, whatever its layout.
    fn floats(&mut self, name: &str) -> Result<Vec<f32>, Error> {
        let bytes = self.bytes(name)?;
        let info = self.info(name)?;
        if info.ggml_dtype == GgmlDType::F32 {
            return Ok(self
                .raw(name, bytes)?
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect());
        }
        let tensor = self
            .content
            .tensor(self.file, name, &candle_core::Device::Cpu)
            .map_err(error)?;
        tensor
            .dequantize(&candle_core::Device::Cpu)
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map_err(error)
    }

    /// A matrix of `rows × cols` (any rows where `rows` is `None`), in the layout the kernels
    /// run.
    fn matrix(&mut self, name: &str, rows: Option<usize>, cols: usize) -> Result<Matrix, Error> {
        let info = self.info(name)?;
        let rows = rows.unwrap_or(info.shape.dims().first().copied().unwrap_or(0));
        self.expect(name, &[rows, cols])?;
        if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
            return Err(error(format!(
                "`{name}` has {rows} rows of {cols} columns, not a positive multiple of {BLOCK}"
            )));
        }
        let blocks = rows * cols / BLOCK;
        let dtype = self.info(name)?.ggml_dtype;
        let weights = match (self.layout, dtype) {
            (Layout::Shipped, GgmlDType::Q4_1) => Weights::Q4(
                self.raw(name, blocks * 20)?
                    .chunks_exact(20)
                    .map(|b| Q4Block {
                        d: f16(&b[0..2]),
                        m: f16(&b[2..4]),
                        qs: b[4..20].try_into().expect("16 bytes"),
                    })
                    .collect(),
            ),
            (Layout::Shipped, GgmlDType::Q8_0) => Weights::Q8(
                self.raw(name, blocks * 34)?
                    .chunks_exact(34)
                    .map(|b| Q8Block {
                        d: f16(&b[0..2]),
                        qs: std::array::from_fn(|i| b[2 + i] as i8),
                    })
                    .collect(),
            ),
            (Layout::Shipped, _) => {
                return Ok(Matrix::quantize_q8(rows, cols, &self.floats(name)?));
            }
            (Layout::Reference, _) => Weights::F32(self.floats(name)?),
        };
        Ok(Matrix {
            rows,
            cols,
            weights,
        })
    }
}

/// `a · b`, in eight lanes so that it vectorizes (a plain sum of products must be added in
/// order, which does not).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (a, b) in a8.zip(b8) {
        for k in 0..8 {
            lanes[k] += a[k] * b[k];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `x · w / rms(x)` into `out`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let mean = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * w;
    }
}

/// Rotates the pairs `(2i, 2i+1)` of each head of `x` by `position · inv_freq[i]` (the GGUF
/// files of llama models are written for this, interleaved, rotation).
fn rope(x: &mut [f32], head_dim: usize, position: usize, inv_freq: &[f32]) {
    for head in x.chunks_exact_mut(head_dim) {
        for (pair, f) in head.chunks_exact_mut(2).zip(inv_freq) {
            let (sin, cos) = (position as f32 * f).sin_cos();
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * cos - b * sin;
            pair[1] = a * sin + b * cos;
        }
    }
}

/// Adds `from` (`rows × n`, as the matrix products write) to `to` (`n × rows`): a residual.
fn add_transposed(from: &[f32], n: usize, to: &mut [f32]) {
    let rows = from.len() / n;
    for r in 0..rows {
        for t in 0..n {
            to[t * rows + r] += from[r * n + t];
        }
    }
}

/// Row-major `rows × n` (as the matrix products write) to `n × rows`.
fn transpose(from: &[f32], rows: usize, n: usize, to: &mut [f32]) {
    for r in 0..rows {
        for t in 0..n {
            to[t * rows + r] = from[r * n + t];
        }
    }
}

impl Model {
    /// Loads the model `content` (a llama-architecture GGUF file's header) describes from
    /// `file`, with `threads` inference threads (0: one per core the process may use).
    pub fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        file: &mut R,
        layout: Layout,
        threads: usize,
    ) -> Result<Self, Error> {
        let meta = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| error(format!("no `{key}` in the file")))
        };
        let arch = meta("general.architecture")?
            .to_string()
            .map_err(error)?
            .clone();
        if arch != "llama" {
            return Err(error(format!(
                "architecture `{arch}` is not one Orion runs (llama)"
            )));
        }
        // A value that is there must be of its type; one that is not takes its default.
        let optional = |key: &str| content.metadata.get(&format!("llama.{key}"));
        let number = |key: &str| -> Result<Option<usize>, Error> {
            optional(key)
                .map(|v| {
                    v.to_u32()
                        .map(|n| n as usize)
                        .map_err(|e| error(format!("llama.{key}: {e}")))
                })
                .transpose()
        };
        let required =
            |key: &str| number(key)?.ok_or_else(|| error(format!("no `llama.{key}` in the file")));
        let float = |key: &str, default: f32| -> Result<f32, Error> {
            optional(key)
                .map(|v| v.to_f32().map_err(|e| error(format!("llama.{key}: {e}"))))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let scaled = optional("rope.scaling.type")
            .and_then(|v| v.to_string().ok())
            .is_some_and(|t| t != "none");
        if scaled || content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(error(
                "the file scales its rotary positions (rope scaling), which Orion does not run",
            ));
        }
        let dim = required("embedding_length")?;
        let heads = required("attention.head_count")?;
        let kv_heads = number("attention.head_count_kv")?.unwrap_or(heads);
        if heads == 0
            || kv_heads == 0
            || !dim.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
            || !(dim / heads).is_multiple_of(2)
        {
            return Err(error(format!(
                "{heads} heads ({kv_heads} for keys and values) do not divide a width of {dim}"
            )));
        }
        let config = Config {
            layers: required("block_count")?,
            dim,
            ffn: required("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim: dim / heads,
            eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: float("rope.freq_base", 10_000.0)?,
            context: number("context_length")?.unwrap_or(2048),
        };
        if config.layers == 0 || config.ffn == 0 || config.context == 0 {
            return Err(error(
                "the file's llama.* metadata has no layers, feed-forward or context",
            ));
        }
        let length = file.seek(SeekFrom::End(0)).map_err(error)?;
        let mut reader = Reader {
            content,
            file,
            length,
            layout,
        };
        // Every tensor's shape is checked against the metadata before it is read, and its
        // bytes against the file's length: a hostile file gets an error, not a huge
        // allocation or an index out of bounds later.
        let embed = reader.matrix("token_embd.weight", None, dim)?;
        let output = if reader.has("output.weight") {
            Some(reader.matrix("output.weight", None, dim)?)
        } else {
            None
        };
        let out_norm = reader.vector("output_norm.weight", dim)?;
        let (ffn, kv_dim) = (config.ffn, config.kv_dim());
        let mut layers = Vec::new();
        for i in 0..config.layers {
            let name = |what: &str| format!("blk.{i}.{what}.weight");
            let mut m =
                |what: &str, rows: usize, cols: usize| reader.matrix(&name(what), Some(rows), cols);
            let qkv = Matrix::stack(vec![
                m("attn_q", dim, dim)?,
                m("attn_k", kv_dim, dim)?,
                m("attn_v", kv_dim, dim)?,
            ]);
            let wo = m("attn_output", dim, dim)?;
            let gate_up = Matrix::stack(vec![m("ffn_gate", ffn, dim)?, m("ffn_up", ffn, dim)?]);
            let down = m("ffn_down", dim, ffn)?;
            layers.push(Layer {
                attn_norm: reader.vector(&name("attn_norm"), dim)?,
                qkv,
                wo,
                ffn_norm: reader.vector(&name("ffn_norm"), dim)?,
                gate_up,
                down,
                keys: Vec::new(),
                values: Vec::new(),
            });
        }
        let half = config.head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                1.0 / config
                    .rope_base
                    .powf(2.0 * i as f32 / config.head_dim as f32)
            })
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("orion-model-{i}"))
            .build()
            .map_err(error)?
            .into();
        Ok(Self {
            config,
            embed,
            output,
            out_norm,
            layers,
            kernels: if layout == Layout::Reference {
                Kernels::Portable
            } else {
                Kernels::detect()
            },
            layout,
            pool,
            position: 0,
            inv_freq,
        })
    }

    /// The kernels it runs and its threads, for reports.
    pub fn describe(&self) -> String {
        format!(
            "{} kernels, {} thread(s), {:.1} MB of weights",
            self.kernels.name(),
            self.pool.current_num_threads(),
            self.weight_bytes() as f64 / 1e6
        )
    }

    /// The tokens it has logits for: the output matrix's rows.
    pub fn vocab(&self) -> usize {
        self.output.as_ref().unwrap_or(&self.embed).rows
    }

    /// The bytes its weights take.
    fn weight_bytes(&self) -> usize {
        self.embed.bytes()
            + self.output.as_ref().map_or(0, Matrix::bytes)
            + self
                .layers
                .iter()
                .map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes())
                .sum::<usize>()
    }

    /// How many positions it has read since [`Model::clear`].
    pub fn position(&self) -> usize {
        self.position
    }

    /// Forgets the context (the cache's memory is kept for the next).
    pub fn clear(&mut self) {
        self.position = 0;
        for layer in &mut self.layers {
            layer.keys.clear();
            layer.values.clear();
        }
    }

    /// Reads `tokens` after the context so far and returns the logits of the token after the
    /// last of them.
    pub fn forward(&mut self, tokens: &[u32]) -> Result<Vec<f32>, Error> {
        if tokens.is_empty() {
            return Err(error("nothing to read"));
        }
        if self.position + tokens.len() > self.config.context {
            return Err(error(format!(
                "{} tokens after {} pass the model's context of {}",
                tokens.len(),
                self.position,
                self.config.context
            )));
        }
        if let Some(bad) = tokens.iter().find(|t| **t as usize >= self.embed.rows) {
            return Err(error(format!("token {bad} is outside the vocabulary")));
        }
        let pool = self.pool.clone();
        Ok(pool.install(|| self.read(tokens)))
    }

    fn read(&mut self, tokens: &[u32]) -> Vec<f32> {
        let c = self.config.clone();
        let (n, dim, kv_dim) = (tokens.len(), c.dim, c.kv_dim());
        let quantized = self.layout != Layout::Reference;
        let kernels = self.kernels;
        let start = self.position;
        let mut x = vec![0f32; n * dim];
        for (t, row) in tokens.iter().zip(x.chunks_exact_mut(dim)) {
            self.embed.row(*t as usize, row);
        }
        let mut normed = vec![0f32; n * c.ffn.max(dim)];
        let mut acts = vec![ActBlock::default(); n * c.ffn.max(dim) / BLOCK];
        let mut product = vec![0f32; n * 2 * c.ffn.max(dim + 2 * kv_dim)];
        let mut rows = vec![0f32; n * 2 * c.ffn.max(dim + 2 * kv_dim)];
        let mut attended = vec![0f32; n * dim];
        let group = c.heads / c.kv_heads;
        let scale = 1.0 / (c.head_dim as f32).sqrt();
        let quantize = |x: &[f32], acts: &mut [ActBlock]| {
            if quantized {
                quant::quantize_acts(x, acts);
            }
        };
        for layer in &mut self.layers {
            // Attention.
            for (x, out) in x.chunks_exact(dim).zip(normed.chunks_exact_mut(dim)) {
                rms_norm(x, &layer.attn_norm, c.eps, out);
            }
            quantize(&normed[..n * dim], &mut acts[..n * dim / BLOCK]);
            let width = layer.qkv.rows;
            layer.qkv.matmul(
                kernels,
                &normed[..n * dim],
                &acts,
                n,
                &mut product[..width * n],
            );
            transpose(&product[..width * n], width, n, &mut rows[..n * width]);
            for (t, row) in rows[..n * width].chunks_exact_mut(width).enumerate() {
                let (q, kv) = row.split_at_mut(dim);
                let (k, v) = kv.split_at_mut(kv_dim);
                rope(q, c.head_dim, start + t, &self.inv_freq);
                rope(k, c.head_dim, start + t, &self.inv_freq);
                layer.keys.extend_from_slice(k);
                layer.values.extend_from_slice(v);
            }
            // Each token attends to the positions up to its own, its rows split over the
            // threads (a long prompt's attention grows with the square of its length).
            let (keys, values) = (&layer.keys, &layer.values);
            let rows = &rows;
            attended
                .par_chunks_mut(dim)
                .enumerate()
                // One score buffer per thread, not one per token.
                .for_each_init(Vec::new, |scores, (t, out)| {
                    let seen = start + t + 1;
                    scores.clear();
                    scores.resize(seen, 0f32);
                    let q = &rows[t * width..t * width + dim];
                    for (h, out) in out.chunks_exact_mut(c.head_dim).enumerate() {
                        let at = (h / group) * c.head_dim;
                        let q = &q[h * c.head_dim..(h + 1) * c.head_dim];
                        let mut max = f32::NEG_INFINITY;
                        for (p, s) in scores.iter_mut().enumerate() {
                            *s = dot(q, &keys[p * kv_dim + at..][..c.head_dim]) * scale;
                            max = max.max(*s);
                        }
                        let mut total = 0.0;
                        for s in scores.iter_mut() {
                            *s = (*s - max).exp();
                            total += *s;
                        }
                        out.fill(0.0);
                        for (p, s) in scores.iter().enumerate() {
                            let w = s / total;
                            for (o, v) in
                                out.iter_mut().zip(&values[p * kv_dim + at..][..c.head_dim])
                            {
                                *o += w * v;
                            }
                        }
                    }
                });
            quantize(&attended, &mut acts[..n * dim / BLOCK]);
            layer
                .wo
                .matmul(kernels, &attended, &acts, n, &mut product[..dim * n]);
            add_transposed(&product[..dim * n], n, &mut x);
            // Feed-forward: down(silu(gate) · up).
            for (x, out) in x.chunks_exact(dim).zip(normed.chunks_exact_mut(dim)) {
                rms_norm(x, &layer.ffn_norm, c.eps, out);
            }
            quantize(&normed[..n * dim], &mut acts[..n * dim / BLOCK]);
            let width = 2 * c.ffn;
            layer.gate_up.matmul(
                kernels,
                &normed[..n * dim],
                &acts,
                n,
                &mut product[..width * n],
            );
            for t in 0..n {
                for r in 0..c.ffn {
                    let gate = product[r * n + t];
                    let up = product[(c.ffn + r) * n + t];
                    normed[t * c.ffn + r] = gate / (1.0 + (-gate).exp()) * up;
                }
            }
            quantize(&normed[..n * c.ffn], &mut acts[..n * c.ffn / BLOCK]);
            layer.down.matmul(
                kernels,
                &normed[..n * c.ffn],
                &acts,
                n,
                &mut product[..dim * n],
            );
            add_transposed(&product[..dim * n], n, &mut x);
        }
        self.position += n;
        // The logits of the last token only.
        let last = &x[(n - 1) * dim..];
        let mut out_normed = vec![0f32; dim];
        rms_norm(last, &self.out_norm, c.eps, &mut out_normed);
        quantize(&out_normed, &mut acts[..dim / BLOCK]);
        let output = self.output.as_ref().unwrap_or(&self.embed);
        let mut logits = vec![0f32; output.rows];
        output.matmul(kernels, &out_normed, &acts[..dim / BLOCK], 1, &mut logits);
        logits
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::gguf_file::Value;
    use super::{Layout, Model};

    type Metadata = Vec<(String, Value)>;
    type Tensors = Vec<(String, QTensor)>;

    /// A small llama (64 wide, 2 heads sharing 1 key-value head, 2 layers, 40 tokens) of
    /// seeded weights, as a GGUF file in memory; `edit` changes its metadata and tensors
    /// before it is written.
    fn tiny(edit: impl FnOnce(&mut Metadata, &mut Tensors)) -> Vec<u8> {
        let mut seed = 7u64;
        let mut tensor = |dims: &[usize], dtype: GgmlDType| {
            let n: usize = dims.iter().product();
            let values: Vec<f32> = (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.5
                })
                .collect();
            let t = Tensor::from_vec(values, dims, &Device::Cpu).unwrap();
            QTensor::quantize(&t, dtype).unwrap()
        };
        let ones = |n: usize| {
            QTensor::quantize(
                &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap(),
                GgmlDType::F32,
            )
            .unwrap()
        };
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("llama".into())),
            ("llama.block_count".into(), Value::U32(2)),
            ("llama.embedding_length".into(), Value::U32(64)),
            ("llama.feed_forward_length".into(), Value::U32(96)),
            ("llama.attention.head_count".into(), Value::U32(2)),
            ("llama.attention.head_count_kv".into(), Value::U32(1)),
            ("llama.context_length".into(), Value::U32(32)),
        ];
        let mut tensors = vec![
            (
                "token_embd.weight".to_owned(),
                tensor(&[40, 64], GgmlDType::Q8_0),
            ),
            ("output_norm.weight".to_owned(), ones(64)),
        ];
        for i in 0..2 {
            let name = |what: &str| format!("blk.{i}.{what}.weight");
            tensors.extend([
                (name("attn_norm"), ones(64)),
                (name("ffn_norm"), ones(64)),
                (name("attn_q"), tensor(&[64, 64], GgmlDType::Q4_1)),
                (name("attn_k"), tensor(&[32, 64], GgmlDType::Q4_1)),
                (name("attn_v"), tensor(&[32, 64], GgmlDType::Q4_1)),
                (name("attn_output"), tensor(&[64, 64], GgmlDType::Q4_1)),
                (name("ffn_gate"), tensor(&[96, 64], GgmlDType::Q4_1)),
                (name("ffn_up"), tensor(&[96, 64], GgmlDType::Q4_1)),
                // A layout the kernels do not take as it is: requantized to Q8_0.
                (name("ffn_down"), tensor(&[64, 96], GgmlDType::F16)),
            ]);
        }
        edit(&mut metadata, &mut tensors);
        let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = Cursor::new(Vec::new());
        super::gguf_file::write(&mut out, &metadata, &tensors).unwrap();
        out.into_inner()
    }

    fn load(bytes: &[u8], layout: Layout) -> Result<Model, super::Error> {
        let mut file = Cursor::new(bytes);
        let content = super::gguf_file::Content::read(&mut file).map_err(super::error)?;
        Model::from_gguf(&content, &mut file, layout, 2)
    }

    fn cosine(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / norm(a) / norm(b)
    }

    #[test]
    fn a_prompt_read_at_once_or_token_by_token_gives_the_same_logits() {
        let file = tiny(|_, _| {});
        let prompt = [1, 5, 9, 13, 17, 21, 25];
        let mut model = load(&file, Layout::Shipped).unwrap();
        assert_eq!(model.vocab(), 40);
        let at_once = model.forward(&prompt).unwrap();
        model.clear();
        let mut one_by_one = Vec::new();
        for t in prompt {
            one_by_one = model.forward(&[t]).unwrap();
        }
        assert_eq!(at_once, one_by_one, "the cache holds what a batch sees");
        model.clear();
        model.forward(&prompt[..3]).unwrap();
        assert_eq!(
            model.forward(&prompt[3..]).unwrap(),
            at_once,
            "in two pieces too"
        );
        let mut reference = load(&file, Layout::Reference).unwrap();
        let exact = reference.forward(&prompt).unwrap();
        assert!(
            cosine(&exact, &at_once) > 0.99,
            "{}",
            cosine(&exact, &at_once)
        );
    }

    /// A file with its own output matrix: the logits are its rows; the tokens read are the
    /// embedding's.
    #[test]
    fn a_separate_output_matrix_sets_the_logits_and_the_embedding_the_tokens() {
        let file = tiny(|_, tensors| {
            let rows = Tensor::zeros((48, 64), candle_core::DType::F32, &Device::Cpu).unwrap();
            let output = QTensor::quantize(&rows, GgmlDType::Q8_0).unwrap();
            tensors.push(("output.weight".to_owned(), output));
        });
        let mut model = load(&file, Layout::Shipped).unwrap();
        assert_eq!(model.vocab(), 48);
        assert_eq!(model.forward(&[1]).unwrap().len(), 48);
        let err = model.forward(&[45]).unwrap_err();
        assert!(err.0.contains("outside the vocabulary"), "{err}");
    }

    #[test]
    fn tokens_outside_the_vocabulary_or_past_the_context_are_refused() {
        let mut model = load(&tiny(|_, _| {}), Layout::Shipped).unwrap();
        let err = model.forward(&[40]).unwrap_err();
        assert!(err.0.contains("outside the vocabulary"), "{err}");
        assert!(model.forward(&[]).is_err());
        model.forward(&[1; 30]).unwrap();
        let err = model.forward(&[1, 2, 3]).unwrap_err();
        assert!(err.0.contains("context of 32"), "{err}");
        assert_eq!(
            model.position(),
            30,
            "a refused read leaves the context as it was"
        );
    }

    /// An edit of [`tiny`] that gives tensor `name` the shape `dims`.
    fn reshaped(
        name: &'static str,
        dims: &'static [usize],
        dtype: GgmlDType,
    ) -> impl FnOnce(&mut Metadata, &mut Tensors) {
        move |_, tensors| {
            let at = tensors.iter().position(|(k, _)| k == name).unwrap();
            let zeros = Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu).unwrap();
            tensors[at].1 = QTensor::quantize(&zeros, dtype).unwrap();
        }
    }

    /// A hostile or broken file is refused with a reason, before anything large is
    /// allocated: nothing panics.
    #[test]
    fn a_malformed_file_is_refused_with_its_reason() {
        let meta = |key: &'static str, value: Value| {
            move |m: &mut Metadata, _: &mut Tensors| {
                m.retain(|(k, _)| k != key);
                m.push((key.to_owned(), value));
            }
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                tiny(meta("general.architecture", Value::String("gpt2".into()))),
                "architecture `gpt2`",
            ),
            (
                tiny(meta("llama.attention.head_count", Value::U32(0))),
                "do not divide",
            ),
            (
                tiny(meta("llama.attention.head_count_kv", Value::U32(3))),
                "do not divide",
            ),
            (
                tiny(meta(
                    "llama.attention.head_count_kv",
                    Value::String("1".into()),
                )),
                "head_count_kv",
            ),
            (
                tiny(meta("llama.block_count", Value::U32(u32::MAX))),
                "no tensor `blk.2.attn_q.weight`",
            ),
            (
                tiny(meta("llama.embedding_length", Value::U32(1 << 30))),
                "token_embd.weight",
            ),
            (
                tiny(meta(
                    "llama.rope.scaling.type",
                    Value::String("yarn".into()),
                )),
                "rope scaling",
            ),
            (
                tiny(|_, t| t.retain(|(k, _)| k != "blk.1.ffn_up.weight")),
                "no tensor `blk.1.ffn_up.weight`",
            ),
            (
                tiny(reshaped("blk.0.attn_k.weight", &[32, 96], GgmlDType::Q4_1)),
                "`blk.0.attn_k.weight` is [32, 96]",
            ),
            (
                tiny(reshaped("output_norm.weight", &[8], GgmlDType::F32)),
                "`output_norm.weight` is [8]",
            ),
        ];
        for (file, reason) in cases {
            let err = load(&file, Layout::Shipped).map(|_| ()).unwrap_err();
            assert!(err.0.contains(reason), "{reason:?}: {err}");
        }
        let mut cut = tiny(|_, _| {});
        cut.truncate(cut.len() - 100);
        let err = load(&cut, Layout::Shipped).map(|_| ()).unwrap_err();
        assert!(err.0.contains("does not fit in the file"), "{err}");
    }
}
