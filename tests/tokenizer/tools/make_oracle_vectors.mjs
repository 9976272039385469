// Generates tests/tokenizer/data/oracle-*.json: encode/decode results of the
// Hugging Face `tokenizers` library (the npm binding of the Rust crate) for
// the test tokenizers and for variants of them that exercise other
// components. Run by hand when the cases change; the tests only read the
// JSON it writes:
//
//   npm install tokenizers@0.23.2   (in some scratch folder, on NODE_PATH)
//   node tests/tokenizer/tools/make_oracle_vectors.mjs
//
// Every variant is a base tokenizer.json with some top-level members (or
// model options) replaced: the "patch" stored next to the cases, which the
// test applies the same way before loading.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const dataDir = path.join(root, 'tests/data');
const outDir = path.join(root, 'tests/tokenizer/data');

// mulberry32: a small seeded PRNG, so the cases are reproducible.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pieces = [
  ' ', '  ', '    ', '\t', '\n', '\n\n', '\r\n', '\u00a0', '\u2003', '\u3000', '\u2028', '\u180e',
  'def', ' return', 'self', '.', ',', ':', '(', ')', '[]', '{', '}', '==', '!=', '+=', '->', '#',
  '"""', "'", '"', '\\', '_', '__init__', 'x', 'y1', '0', '7', '123', '4567', '3.14', '1e-9',
  'Hello', 'WORLD', 'naïve', 'café', 'Ünïcödé', 'İstanbul', 'ſ', 'ß', 'ẞ', 'K', 'ΑΒΓ', 'ς', 'Σ',
  'кириллица', '日本語', 'のテキスト', '中文', '한국어', 'עברית', 'العربية', 'ह', 'ि',
  '😀', '🎉🚀', '👍🏽', '\u200b', '\u0301', 'e\u0301', '\ufb01', '①', '½', 'Ⅻ',
  "'s", "'T", "'re", "'VE", "'ll", "'d", '<s>', '</s>', '<unk>', '<|im_start|>', '<|im_end|>',
  '<|endoftext|>', '<|im_', '<|begin_of_text|>', '<|eot_id|>', '<mask>', '[SEP]', 'word',
  'words', 'hello world', 'Hello', '\u0000', '\u0001', '\u007f', '~', '`', '@', '$', '%', '^',
];

function randomText(r, maxPieces) {
  const n = 1 + Math.floor(r() * maxPieces);
  let s = '';
  for (let i = 0; i < n; i++) {
    if (r() < 0.15) {
      // A random code point, now and then outside the BMP.
      let cp = r() < 0.8 ? 0x20 + Math.floor(r() * 0x2fe0) : 0x1f300 + Math.floor(r() * 0x300);
      if (cp >= 0xd800 && cp < 0xe000) cp = 0x41;
      s += String.fromCodePoint(cp);
    } else {
      s += pieces[Math.floor(r() * pieces.length)];
    }
  }
  return s;
}

const fixedTexts = [
  '', ' ', '  ', 'a', 'hello world', ' Hello world', 'Hello  world', 'trailing  ', '\n\n\n',
  'def f(a, b):\n    return a + b\n', '12345678901234', "I'M SHOUTING, you're not",
  'a<s>b</s>c', '<s><s></s>', '<|im_start|>user\nhi<|im_end|>\n', ' <mask> [SEP] word words',
  'a word, wordy word_ word', 'hello world Hello world', '\u0000\u0001\u007f', 'x'.repeat(600),
  ' '.repeat(300) + 'x', '=' .repeat(100), 'ab'.repeat(200), '😀'.repeat(40),
];

// Slices of the Python standard library: what the coder models tokenize.
function pythonChunks(r, count, size) {
  const dir = '/usr/lib/python3.11';
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.py')).sort();
  const out = [];
  while (out.length < count) {
    const text = fs.readFileSync(path.join(dir, files[Math.floor(r() * files.length)]), 'utf8');
    if (text.length < size) continue;
    const start = Math.floor(r() * (text.length - size));
    out.push(text.slice(start, start + Math.floor(size / 2 + r() * size / 2)));
  }
  return out;
}

function applyPatch(base, patch) {
  const j = JSON.parse(JSON.stringify(base));
  for (const [k, v] of Object.entries(patch)) {
    if (k === 'model') Object.assign(j.model, v);
    else if (k === 'added_tokens_extra') j.added_tokens.push(...v);
    else j[k] = v;
  }
  return j;
}

const spmDecoder = {
  type: 'Sequence',
  decoders: [
    { type: 'Replace', pattern: { String: '\u2581' }, content: ' ' },
    { type: 'ByteFallback' },
    { type: 'Fuse' },
    { type: 'Strip', content: ' ', start: 1, stop: 0 },
  ],
};

const variants = [
  { name: 'coder', base: 'models/tiny/qwen2-bias', patch: {}, python: 16 },
  { name: 'llama3', base: 'models/tokenizers/llama3-bpe', patch: {}, python: 8 },
  { name: 'spm', base: 'models/tokenizers/spm-bpe', patch: {}, python: 8 },
  {
    name: 'spm-metaspace', base: 'models/tokenizers/spm-bpe',
    patch: {
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: true },
      decoder: { type: 'Sequence', decoders: [{ type: 'ByteFallback' },
        { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: true }] },
    },
  },
  {
    name: 'spm-metaspace-always', base: 'models/tokenizers/spm-bpe',
    patch: {
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: false },
      decoder: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: false },
    },
  },
  {
    name: 'spm-metaspace-never', base: 'models/tokenizers/spm-bpe',
    patch: {
      normalizer: { type: 'NFC' },
      pre_tokenizer: { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true },
      decoder: { type: 'Sequence', decoders: [
        { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'never', split: true },
        { type: 'ByteFallback' }, { type: 'Fuse' }] },
    },
  },
  {
    name: 'spm-nfkc-lower', base: 'models/tokenizers/spm-bpe',
    patch: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFKC' }, { type: 'Lowercase' }, { type: 'Prepend', prepend: '\u2581' },
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    },
  },
  {
    name: 'spm-strip-regex', base: 'models/tokenizers/spm-bpe',
    patch: {
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFD' }, { type: 'Strip', strip_left: true, strip_right: true },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
        { type: 'Prepend', prepend: '\u2581' },
        { type: 'Replace', pattern: { String: ' ' }, content: '\u2581' }] },
    },
  },
  {
    name: 'spm-unk-fused', base: 'models/tokenizers/spm-bpe',
    patch: { model: { byte_fallback: false, fuse_unk: true } },
  },
  {
    name: 'spm-unk-unfused', base: 'models/tokenizers/spm-bpe',
    patch: { model: { byte_fallback: false, fuse_unk: false } },
  },
  {
    name: 'spm-no-unk', base: 'models/tokenizers/spm-bpe',
    patch: { model: { byte_fallback: false, unk_token: null } },
  },
  {
    name: 'spm-added-flags', base: 'models/tokenizers/spm-bpe',
    patch: {
      added_tokens_extra: [
        { id: 4000, content: '<mask>', single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
        { id: 4001, content: '[SEP]', single_word: false, lstrip: false, rstrip: true, normalized: false, special: true },
        { id: 4002, content: 'word', single_word: true, lstrip: false, rstrip: false, normalized: false, special: false },
        { id: 4003, content: 'hello world', single_word: false, lstrip: false, rstrip: false, normalized: true, special: false },
        { id: 4004, content: '<s><s>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false },
      ],
    },
  },
  {
    name: 'coder-added-flags', base: 'models/tiny/qwen2-bias',
    patch: {
      added_tokens_extra: [
        { id: 8192, content: '<mask>', single_word: false, lstrip: true, rstrip: true, normalized: false, special: true },
        { id: 8193, content: 'word', single_word: true, lstrip: false, rstrip: false, normalized: true, special: false },
        { id: 8194, content: '<|im_start|>user', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      ],
    },
  },
  {
    name: 'llama3-splits', base: 'models/tokenizers/llama3-bpe',
    patch: {
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { Regex: '\\d' }, behavior: 'MergedWithPrevious', invert: false },
        { type: 'Split', pattern: { String: '_' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { Regex: '[.,;]' }, behavior: 'Removed', invert: false },
        { type: 'Split', pattern: { Regex: '\\s+' }, behavior: 'Contiguous', invert: false },
        { type: 'Split', pattern: { Regex: '[A-Z]+' }, behavior: 'Isolated', invert: true },
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }] },
    },
  },
  {
    name: 'llama3-digits-whitespace', base: 'models/tokenizers/llama3-bpe',
    patch: {
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'Whitespace' },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
      decoder: null,
      post_processor: { type: 'BertProcessing', sep: ['<|end_of_text|>', 1], cls: ['<|begin_of_text|>', 0] },
    },
  },
  {
    name: 'llama3-gpt2', base: 'models/tokenizers/llama3-bpe',
    patch: {
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Digits', individual_digits: false },
        { type: 'WhitespaceSplit' },
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }] },
      decoder: { type: 'Sequence', decoders: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        { type: 'Strip', content: ' ', start: 0, stop: 2 }] },
      post_processor: { type: 'Sequence', processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        { type: 'RobertaProcessing', sep: ['<|eot_id|>', 4], cls: ['<|begin_of_text|>', 0],
          trim_offsets: true, add_prefix_space: true }] },
      model: { ignore_merges: false },
    },
  },
  {
    name: 'llama3-replace-after-join', base: 'models/tokenizers/llama3-bpe',
    patch: {
      decoder: { type: 'Sequence', decoders: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
        { type: 'Replace', pattern: { String: 'ab' }, content: 'X' }] },
    },
  },
];

// HF's Strip decoder panics on an empty text when stop > 0: such lists
// are not decoded (null in the file, skipped by the test).
function hasStripStop(decoder) {
  if (!decoder) return false;
  if (decoder.type === 'Sequence') return decoder.decoders.some(hasStripStop);
  return decoder.type === 'Strip' && decoder.stop > 0;
}

async function safeDecode(tok, json, ids, skip) {
  if (hasStripStop(json.decoder)) {
    const special = new Set(json.added_tokens.filter((t) => t.special).map((t) => t.id));
    if (ids.filter((id) => !(skip && special.has(id))).length === 0) return null;
  }
  return tok.decode(ids, skip);
}

async function main() {
  fs.mkdirSync(outDir, { recursive: true });
  for (const v of variants) {
    const base = JSON.parse(fs.readFileSync(path.join(dataDir, v.base, 'tokenizer.json'), 'utf8'));
    const json = applyPatch(base, v.patch);
    const tok = Tokenizer.fromString(JSON.stringify(json));
    const r = rng(0x5eed + v.name.length * 7919 + v.name.charCodeAt(0));
    const texts = [...fixedTexts];
    for (let i = 0; i < 36; i++) texts.push(randomText(r, 24));
    if (v.python) texts.push(...pythonChunks(r, v.python, 1200));
    const cases = [];
    for (const text of texts) {
      const plain = await tok.encode(text, null, { addSpecialTokens: false });
      const special = await tok.encode(text, null, { addSpecialTokens: true });
      const ids = special.getIds();
      cases.push({
        text,
        ids: plain.getIds(),
        ids_special: ids,
        decoded: await safeDecode(tok, json, ids, false),
        decoded_skip: await safeDecode(tok, json, ids, true),
      });
    }
    // Random id sequences: any token, often the ones that hold part of a
    // character (byte tokens) or are special.
    const vocabSize = tok.getVocabSize(true);
    const addedIds = json.added_tokens.map((t) => tok.tokenToId(t.content)).filter((id) => id != null);
    const idCases = [];
    for (let i = 0; i < 30; i++) {
      const n = Math.floor(r() * 30);
      const ids = [];
      for (let k = 0; k < n; k++) {
        const u = r();
        if (u < 0.1) ids.push(addedIds[Math.floor(r() * addedIds.length)]);
        else if (u < 0.45) ids.push(3 + Math.floor(r() * 256));
        else ids.push(Math.floor(r() * vocabSize));
      }
      idCases.push({
        ids,
        id_decoded: await safeDecode(tok, json, ids, false),
        id_decoded_skip: await safeDecode(tok, json, ids, true),
      });
    }
    const out = { base: v.base, patch: v.patch, cases, id_cases: idCases };
    fs.writeFileSync(path.join(outDir, `oracle-${v.name}.json`), JSON.stringify(out) + '\n');
    console.log(v.name, cases.length, 'texts', idCases.length, 'id lists');
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
