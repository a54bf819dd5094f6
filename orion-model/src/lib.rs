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
use std::path::Path;

use candle_core::quantized::GgmlDType;
pub use candle_core::quantized::gguf_file;

pub mod quant;

use quant::{ActBlock, BLOCK, Kernels, Matrix, Q4Block, Q8Block, Weights};

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
    pub vocab: usize,
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

/// f16 bits to f32.
fn f16(bits: u16) -> f32 {
    let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exponent = i32::from((bits >> 10) & 0x1f);
    let fraction = f32::from(bits & 0x3ff);
    sign * match exponent {
        0 => fraction * 2f32.powi(-24),
        31 if fraction == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        e => (1.0 + fraction / 1024.0) * 2f32.powi(e - 15),
    }
}

/// Reads the tensors of a GGUF file.
struct Reader<'a, R> {
    content: &'a gguf_file::Content,
    file: &'a mut R,
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

    fn raw(&mut self, name: &str, bytes: usize) -> Result<Vec<u8>, Error> {
        let offset = self.content.tensor_data_offset + self.info(name)?.offset;
        self.file.seek(SeekFrom::Start(offset)).map_err(error)?;
        let mut out = vec![0u8; bytes];
        self.file.read_exact(&mut out).map_err(error)?;
        Ok(out)
    }

    /// Every value of a tensor as f32, whatever its layout.
    fn floats(&mut self, name: &str) -> Result<Vec<f32>, Error> {
        let info = self.info(name)?;
        if info.ggml_dtype == GgmlDType::F32 {
            let n = info.shape.elem_count();
            return Ok(self
                .raw(name, n * 4)?
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

    /// A matrix, `rows × cols`, in the layout the kernels run.
    fn matrix(&mut self, name: &str) -> Result<Matrix, Error> {
        let info = self.info(name)?;
        let dims = info.shape.dims().to_vec();
        let [rows, cols] = dims[..] else {
            return Err(error(format!("`{name}` is not a matrix: {dims:?}")));
        };
        if !cols.is_multiple_of(BLOCK) {
            return Err(error(format!(
                "`{name}` has {cols} columns, not a multiple of {BLOCK}"
            )));
        }
        let blocks = rows * cols / BLOCK;
        let dtype = info.ggml_dtype;
        let weights = match (self.layout, dtype) {
            (Layout::Shipped, GgmlDType::Q4_1) => Weights::Q4(
                self.raw(name, blocks * 20)?
                    .chunks_exact(20)
                    .map(|b| Q4Block {
                        d: f16(u16::from_le_bytes([b[0], b[1]])),
                        m: f16(u16::from_le_bytes([b[2], b[3]])),
                        qs: b[4..20].try_into().expect("16 bytes"),
                    })
                    .collect(),
            ),
            (Layout::Shipped, GgmlDType::Q8_0) => Weights::Q8(
                self.raw(name, blocks * 34)?
                    .chunks_exact(34)
                    .map(|b| Q8Block {
                        d: f16(u16::from_le_bytes([b[0], b[1]])),
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

/// Row-major `rows × n` (as the matrix products write) to `n × rows`.
fn transpose(from: &[f32], rows: usize, n: usize, to: &mut [f32]) {
    for r in 0..rows {
        for t in 0..n {
            to[t * rows + r] = from[r * n + t];
        }
    }
}

impl Model {
    /// Loads a llama-architecture GGUF file, with `threads` inference threads (0: one per
    /// core the process may use).
    pub fn load(path: &Path, layout: Layout, threads: usize) -> Result<Self, Error> {
        let mut file = std::fs::File::open(path).map_err(error)?;
        let content = gguf_file::Content::read(&mut file).map_err(error)?;
        Self::from_gguf(&content, &mut file, layout, threads)
    }

    /// Loads the model `content` describes from `file`.
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
        let number = |key: &str| -> Result<usize, Error> {
            Ok(meta(&format!("llama.{key}"))?.to_u32().map_err(error)? as usize)
        };
        let float = |key: &str, default: f32| -> f32 {
            content
                .metadata
                .get(&format!("llama.{key}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let dim = number("embedding_length")?;
        let heads = number("attention.head_count")?;
        let kv_heads = number("attention.head_count_kv").unwrap_or(heads);
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
            layers: number("block_count")?,
            dim,
            ffn: number("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim: dim / heads,
            eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base: float("rope.freq_base", 10_000.0),
            vocab: 0,
            context: number("context_length").unwrap_or(2048),
        };
        let mut reader = Reader {
            content,
            file,
            layout,
        };
        let embed = reader.matrix("token_embd.weight")?;
        let output = if reader.has("output.weight") {
            Some(reader.matrix("output.weight")?)
        } else {
            None
        };
        let out_norm = reader.floats("output_norm.weight")?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let m = |reader: &mut Reader<'_, R>, what: &str| {
                reader.matrix(&format!("blk.{i}.{what}.weight"))
            };
            layers.push(Layer {
                attn_norm: reader.floats(&format!("blk.{i}.attn_norm.weight"))?,
                qkv: Matrix::stack(vec![
                    m(&mut reader, "attn_q")?,
                    m(&mut reader, "attn_k")?,
                    m(&mut reader, "attn_v")?,
                ]),
                wo: m(&mut reader, "attn_output")?,
                ffn_norm: reader.floats(&format!("blk.{i}.ffn_norm.weight"))?,
                gate_up: Matrix::stack(vec![
                    m(&mut reader, "ffn_gate")?,
                    m(&mut reader, "ffn_up")?,
                ]),
                down: m(&mut reader, "ffn_down")?,
                keys: Vec::new(),
                values: Vec::new(),
            });
        }
        let config = Config {
            vocab: output.as_ref().unwrap_or(&embed).rows,
            ..config
        };
        let shapes_agree = embed.cols == dim
            && layers.iter().all(|l| {
                l.qkv.rows == dim + 2 * config.kv_dim()
                    && l.gate_up.rows == 2 * config.ffn
                    && l.down.cols == config.ffn
                    && l.wo.rows == dim
            });
        if !shapes_agree {
            return Err(error(
                "the tensors' shapes do not agree with the file's llama.* metadata",
            ));
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

    /// The bytes its weights take.
    pub fn weight_bytes(&self) -> usize {
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
        let mut scores = vec![0f32; start + n];
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
            for t in 0..n {
                let seen = start + t + 1;
                let q = &rows[t * width..t * width + dim];
                for h in 0..c.heads {
                    let kvh = h / group;
                    let q = &q[h * c.head_dim..(h + 1) * c.head_dim];
                    let mut max = f32::NEG_INFINITY;
                    for (p, s) in scores[..seen].iter_mut().enumerate() {
                        let k = &layer.keys[p * kv_dim + kvh * c.head_dim..][..c.head_dim];
                        *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
                        max = max.max(*s);
                    }
                    let mut total = 0.0;
                    for s in &mut scores[..seen] {
                        *s = (*s - max).exp();
                        total += *s;
                    }
                    let out = &mut attended[t * dim + h * c.head_dim..][..c.head_dim];
                    out.fill(0.0);
                    for (p, s) in scores[..seen].iter().enumerate() {
                        let v = &layer.values[p * kv_dim + kvh * c.head_dim..][..c.head_dim];
                        let w = s / total;
                        for (o, v) in out.iter_mut().zip(v) {
                            *o += w * v;
                        }
                    }
                }
            }
            quantize(&attended, &mut acts[..n * dim / BLOCK]);
            layer
                .wo
                .matmul(kernels, &attended, &acts, n, &mut product[..dim * n]);
            for r in 0..dim {
                for t in 0..n {
                    x[t * dim + r] += product[r * n + t];
                }
            }
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
            for r in 0..dim {
                for t in 0..n {
                    x[t * dim + r] += product[r * n + t];
                }
            }
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
    use super::f16;

    #[test]
    fn half_precision_bits_widen_exactly() {
        assert_eq!(f16(0x3c00), 1.0);
        assert_eq!(f16(0xc000), -2.0);
        assert_eq!(f16(0x0001), 2f32.powi(-24));
        assert_eq!(f16(0x7bff), 65504.0);
        assert_eq!(f16(0x3555), 0.333_251_95);
        assert!(f16(0x7c00).is_infinite() && f16(0x7e00).is_nan());
    }
}
