// SpanMarker attention for float32 CPU inference, read straight from the encoder's fused
// query-key-value rows. In a sample of `n` text tokens and `P` marker pairs, text attends to the
// `n` text keys and every marker to the text keys, itself and its partner; padding is never read.
// A dense `T x T` masked attention scores every query against all `T` keys, although at most
// `n + 2` can receive weight, and needs the rows transposed into `[B, heads, T, d]` and back. Here
// one task per (sample, head) packs that head's text keys and values once and runs each query
// over them: `n + 2` scores, a softmax and the weighted sum, written as `[rows, H]` context rows
// that the output map reads as they are.
//
// Inference only (no gradient, no dropout). Tensors cross as tch's `at::Tensor*`; libtorch errors
// come back as a message (guard.h).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "guard.h"

// The per-row loops are compiled for AVX-512, AVX2 and the baseline, chosen once at load time.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SPAN_MARKER_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SPAN_MARKER_CLONES
#endif

namespace {

// Keys are packed, and the head dimension walked, in blocks of this many floats: one
// 16-float vector (one AVX-512 register, two AVX2 or four SSE ones) that stays in registers
// while a product accumulates into it.
constexpr int64_t BLOCK = 16;
typedef float Vec __attribute__((vector_size(BLOCK * sizeof(float)), aligned(sizeof(float))));

__attribute__((always_inline)) inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

__attribute__((always_inline)) inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }

typedef int32_t IVec __attribute__((vector_size(BLOCK * sizeof(int32_t)), aligned(sizeof(int32_t))));

__attribute__((always_inline)) inline Vec splat(float x) {
  Vec v = {};
  return v + x;
}

// exp(x) for x <= 0 (a softmax after subtracting the maximum) on a whole vector: Cephes' expf
// (2^k e^r with r in [-ln2/2, ln2/2] and a degree-6 polynomial), relative error about 1e-7;
// exactly 0 below -87, where expf's result would be subnormal.
__attribute__((always_inline)) inline Vec exp_nonpositive(Vec x) {
  const Vec low = splat(-87.0f);
  const auto underflow = x < low;
  x = underflow ? low : x;
  // Round to nearest by the 1.5 * 2^23 trick (exact for |x log2 e| < 2^22).
  const Vec k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const Vec r = x - k * 0.693359375f + k * 2.12194440e-4f;
  Vec p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const Vec e = p * r * r + r + 1.0f;
  const IVec bits = (__builtin_convertvector(k, IVec) + 127) << 23;
  Vec scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return underflow ? splat(0.0f) : e * scale;
}

__attribute__((always_inline)) inline float sum(Vec v) {
  float total = 0.0f;
  for (int64_t l = 0; l < BLOCK; ++l) {
    total += v[l];
  }
  return total;
}

__attribute__((always_inline)) inline float max(Vec v) {
  float top = v[0];
  for (int64_t l = 1; l < BLOCK; ++l) {
    top = std::max(top, v[l]);
  }
  return top;
}

// Query rows run in groups of this many, so that each loaded key or value block feeds
// independent accumulations (one alone would wait on its own previous step).
constexpr int64_t ROWS = 4;

struct Sample {
  int64_t text;        // n: text tokens
  int64_t markers;     // 2P: start markers, then end markers
  int64_t text_row;    // row of text token 0
  int64_t marker_row;  // row of the first start marker
};

// Scratch of one thread: packed keys `[d][keys]` (keys a multiple of BLOCK, zero beyond the
// text), values `[n][d]`, scaled queries `[ROWS][d]` and scores `[ROWS][keys]`.
struct Scratch {
  std::vector<float> kt, vt, q, scores;
  Scratch(int64_t d, int64_t keys)
      : kt(d * keys), vt(keys * d), q(ROWS * d), scores(ROWS * keys) {}
};

// One (sample, head) task.
SPAN_MARKER_CLONES
void attend_sample(const float* qkv, float* out, int64_t width, int64_t hidden, int64_t head,
                   int64_t d, float scale, const Sample& s, Scratch& scratch) {
  const int64_t n = s.text;
  const int64_t keys = (n + BLOCK - 1) / BLOCK * BLOCK;
  const int64_t q_off = head * d, k_off = hidden + head * d, v_off = 2 * hidden + head * d;
  float* kt = scratch.kt.data();
  float* vt = scratch.vt.data();
  for (int64_t j = 0; j < n; ++j) {
    const float* k = qkv + (s.text_row + j) * width + k_off;
    for (int64_t c = 0; c < d; ++c) {
      kt[c * keys + j] = k[c];
    }
    std::memcpy(vt + j * d, qkv + (s.text_row + j) * width + v_off, d * sizeof(float));
  }
  for (int64_t c = 0; c < d; ++c) {
    std::fill(kt + c * keys + n, kt + (c + 1) * keys, 0.0f);
  }
  const int64_t pairs = s.markers / 2;
  const int64_t total_rows = n + s.markers;
  // Query `i` of the sample (text, then markers): its row and its partner's (its own for text).
  const auto rows_of = [&](int64_t i, int64_t& row, int64_t& other) {
    const int64_t m = i - n;
    row = i >= n ? s.marker_row + m : s.text_row + i;
    other = i >= n ? s.marker_row + (m < pairs ? m + pairs : m - pairs) : row;
  };
  for (int64_t first = 0; first < total_rows; first += ROWS) {
    // The next group's rows are scattered (a marker's partner lies `P` rows away): fetch them
    // while this group computes.
    for (int64_t i = first + ROWS; i < std::min(first + 2 * ROWS, total_rows); ++i) {
      int64_t row, other;
      rows_of(i, row, other);
      for (int64_t c = 0; c < d; c += BLOCK) {
        __builtin_prefetch(qkv + row * width + q_off + c);
        __builtin_prefetch(qkv + row * width + v_off + c);
        if (i >= n) {
          __builtin_prefetch(qkv + row * width + k_off + c);
          __builtin_prefetch(qkv + other * width + k_off + c);
          __builtin_prefetch(qkv + other * width + v_off + c);
        }
      }
    }
    // The last group repeats its last row where it runs short (same values, written twice).
    int64_t row[ROWS], other[ROWS];
    bool marker[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      const int64_t i = std::min(first + r, total_rows - 1);
      marker[r] = i >= n;
      rows_of(i, row[r], other[r]);
      const float* q = qkv + row[r] * width + q_off;
      for (int64_t c = 0; c < d; ++c) {
        scratch.q[r * d + c] = q[c] * scale;
      }
    }
    const float* q = scratch.q.data();
    float* scores = scratch.scores.data();
    // Scores against the text keys, a block of keys for all rows at a time.
    for (int64_t j = 0; j < keys; j += BLOCK) {
      Vec acc[ROWS] = {};
      for (int64_t c = 0; c < d; ++c) {
        const Vec k = load(kt + c * keys + j);
        for (int64_t r = 0; r < ROWS; ++r) {
          acc[r] += q[r * d + c] * k;
        }
      }
      for (int64_t r = 0; r < ROWS; ++r) {
        store(scores + r * keys + j, acc[r]);
      }
    }
    // Per row: its own and its partner's score (markers), the softmax weights and their sum.
    float own[ROWS], partner[ROWS], inverse[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      float* row_scores = scores + r * keys;
      std::fill(row_scores + n, row_scores + keys, -1e30f);  // not the maximum
      Vec top_v = load(row_scores);
      for (int64_t j = BLOCK; j < keys; j += BLOCK) {
        const Vec v = load(row_scores + j);
        top_v = v > top_v ? v : top_v;
      }
      float top = max(top_v);
      if (marker[r]) {
        const float* k_own = qkv + row[r] * width + k_off;
        const float* k_partner = qkv + other[r] * width + k_off;
        Vec a_v = {}, b_v = {};
        int64_t c = 0;
        for (; c + BLOCK <= d; c += BLOCK) {
          const Vec q_v = load(q + r * d + c);
          a_v += q_v * load(k_own + c);
          b_v += q_v * load(k_partner + c);
        }
        float a = sum(a_v), b = sum(b_v);
        for (; c < d; ++c) {
          a += q[r * d + c] * k_own[c];
          b += q[r * d + c] * k_partner[c];
        }
        top = std::max(top, std::max(a, b));
        own[r] = std::exp(a - top);
        partner[r] = std::exp(b - top);
      } else {
        own[r] = partner[r] = 0.0f;
      }
      // The keys past the text scored -1e30: their weights come out exactly zero.
      for (int64_t j = 0; j < keys; j += BLOCK) {
        store(row_scores + j, exp_nonpositive(load(row_scores + j) - top));
      }
      Vec total_v = {};
      for (int64_t j = 0; j < keys; j += BLOCK) {
        total_v += load(row_scores + j);
      }
      inverse[r] = 1.0f / (sum(total_v) + own[r] + partner[r]);
    }
    // The weighted values, a block of the head dimension for all rows at a time.
    int64_t c = 0;
    for (; c + BLOCK <= d; c += BLOCK) {
      Vec acc[ROWS] = {};
      for (int64_t j = 0; j < n; ++j) {
        const Vec v = load(vt + j * d + c);
        for (int64_t r = 0; r < ROWS; ++r) {
          acc[r] += scores[r * keys + j] * v;
        }
      }
      for (int64_t r = 0; r < ROWS; ++r) {
        const float* v_row = qkv + row[r] * width + v_off + c;
        const float* v_other = qkv + other[r] * width + v_off + c;
        acc[r] += own[r] * load(v_row) + partner[r] * load(v_other);
        store(out + row[r] * hidden + head * d + c, acc[r] * inverse[r]);
      }
    }
    for (; c < d; ++c) {
      for (int64_t r = 0; r < ROWS; ++r) {
        float acc = 0.0f;
        for (int64_t j = 0; j < n; ++j) {
          acc += scores[r * keys + j] * vt[j * d + c];
        }
        acc += own[r] * qkv[row[r] * width + v_off + c] + partner[r] * qkv[other[r] * width + v_off + c];
        out[row[r] * hidden + head * d + c] = acc * inverse[r];
      }
    }
  }
}

// The samples of a batch and the shape of its query-key-value rows, checked.
struct Layout {
  std::vector<Sample> samples;
  int64_t rows, width, hidden, heads, d;
  int64_t next;     // rows from here on are padding
  int64_t longest;  // the longest text, in tokens
  int64_t padded_length;
};

Layout layout_of(const at::Tensor& qkv, const at::Tensor& num_tokens, const at::Tensor& start,
                 const at::Tensor& pairs, int64_t heads, int64_t padded_length) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.scalar_type() == at::kFloat && qkv.is_cpu(),
              "marker attention: the query-key-value rows must be a float32 CPU [rows, 3H] "
              "tensor");
  Layout l;
  l.rows = qkv.size(0);
  l.width = qkv.size(1);
  TORCH_CHECK(l.width % 3 == 0 && heads > 0 && (l.width / 3) % heads == 0,
              "marker attention: ", l.width, " columns are not query, key and value of ", heads,
              " heads");
  l.hidden = l.width / 3;
  l.heads = heads;
  l.d = l.hidden / heads;
  l.padded_length = padded_length;
  const auto host = [](const at::Tensor& t) { return t.to(at::kCPU, at::kLong).contiguous(); };
  const auto n = host(num_tokens), a = host(start), p = host(pairs);
  const int64_t batch = n.numel();
  TORCH_CHECK(a.numel() == batch && p.numel() == batch,
              "marker attention: one text length, marker start and pair count per sample");
  l.samples.resize(batch);
  l.next = 0;
  l.longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    Sample& s = l.samples[b];
    s.text = n.data_ptr<int64_t>()[b];
    s.markers = 2 * p.data_ptr<int64_t>()[b];
    const int64_t first_marker = a.data_ptr<int64_t>()[b];
    TORCH_CHECK(s.text > 0 && s.markers >= 0 && first_marker >= s.text,
                "marker attention: sample ", b, " has ", s.text, " text tokens and markers from ",
                first_marker);
    if (padded_length > 0) {
      TORCH_CHECK(first_marker + s.markers <= padded_length,
                  "marker attention: sample ", b, " does not fit ", padded_length, " positions");
      s.text_row = b * padded_length;
      s.marker_row = b * padded_length + first_marker;
      l.next = (b + 1) * padded_length;
    } else {
      // Unpadded rows: each sample's text, then its markers, samples one after another.
      s.text_row = l.next;
      s.marker_row = l.next + s.text;
      l.next += s.text + s.markers;
    }
    l.longest = std::max(l.longest, s.text);
  }
  TORCH_CHECK(l.next <= l.rows, "marker attention: the samples need ", l.next,
              " rows, the input has ", l.rows);
  return l;
}

// Zeroes the rows `[rows, columns]` of `out` that hold no sample's text or markers (padding).
void clear_padding(float* out, int64_t columns, const Layout& l) {
  const auto clear = [&](int64_t from, int64_t to) {
    std::fill(out + from * columns, out + to * columns, 0.0f);
  };
  const int64_t batch = static_cast<int64_t>(l.samples.size());
  for (int64_t b = 0; l.padded_length > 0 && b < batch; ++b) {
    const Sample& s = l.samples[b];
    clear(s.text_row + s.text, s.marker_row);
    clear(s.marker_row + s.markers, (b + 1) * l.padded_length);
  }
  clear(l.next, l.rows);
}

// Runs `task(head, sample)` for every (sample, head) pair on libtorch's threads. Tasks run
// head-major: each thread's contiguous share of them then holds samples of every length
// (batches come sorted longest first), not the long ones alone.
template <typename Task>
void for_each_task(const Layout& l, Task&& task) {
  const int64_t batch = static_cast<int64_t>(l.samples.size());
  at::parallel_for(0, batch * l.heads, 1, [&](int64_t begin, int64_t end) {
    task(begin, end, [&](int64_t t) { return std::make_pair(t / batch, t % batch); });
  });
}

at::Tensor marker_attention(const at::Tensor& qkv_in, const at::Tensor& num_tokens,
                            const at::Tensor& start, const at::Tensor& pairs, int64_t heads,
                            int64_t padded_length) {
  const at::Tensor qkv = qkv_in.contiguous();
  const Layout l = layout_of(qkv, num_tokens, start, pairs, heads, padded_length);
  // Rows that are neither text nor marker (padding) are zero; nothing reads them.
  at::Tensor out = at::empty({l.rows, l.hidden}, qkv.options());
  const float* in_ptr = qkv.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  clear_padding(out_ptr, l.hidden, l);
  const float scale = 1.0f / std::sqrt(static_cast<float>(l.d));
  const int64_t keys = (l.longest + BLOCK - 1) / BLOCK * BLOCK;
  for_each_task(l, [&](int64_t begin, int64_t end, auto task_of) {
    Scratch scratch(l.d, keys);
    for (int64_t t = begin; t < end; ++t) {
      const auto [head, b] = task_of(t);
      attend_sample(in_ptr, out_ptr, l.width, l.hidden, head, l.d, scale, l.samples[b], scratch);
    }
  });
  return out;
}


// ---- Training: dropout on the attention weights, and the gradient ----
//
// The training form computes what the inference form does, with dropout on the attention
// weights (a kept weight is scaled by the inverse keep probability, as `torch.nn.functional.
// dropout`), and saves each row's weights for the backward pass: `[rows, heads, slots]`, the
// sample's text keys in slots `[0, keys)` (zero past its text), its own key in slot `keys` and its
// partner's in `keys + 1`, each weight negated where dropout dropped it (the sign bit is the
// mask; weights are never negative).

constexpr uint64_t GOLDEN_GAMMA = 0x9E3779B97F4A7C15ull;

// SplitMix64's output function (Steele, Lea and Flood 2014), as `src/model/dropout.rs` uses it.
inline uint64_t split_mix64(uint64_t state) {
  uint64_t z = state + GOLDEN_GAMMA;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Which attention weights dropout keeps: slot `j` of (row, head) is element
// `(row * heads + head) * slots + j` of the pass, and element `e` is kept when the 16-bit lane
// `e % 4` of the draw `split_mix64(seed + (e / 4) * GOLDEN_GAMMA)` is below `threshold`: the
// same keep probability (rounded to a multiple of 2^-16) and scale as the hidden states' dropout.
struct Dropout {
  uint64_t seed;
  uint64_t threshold;
  float scale;
  bool on;
  int64_t slots;  // per (row, head): the text keys, own, partner and two spare (a multiple of 4)

  Dropout(double p, uint64_t seed_, int64_t keys) : seed(seed_), slots(keys + 4) {
    on = p > 0.0;
    threshold = on ? static_cast<uint64_t>(std::max(1.0, std::round((1.0 - p) * 65536.0))) : 65536;
    scale = static_cast<float>(65536.0 / static_cast<double>(threshold));
  }

  // The kept flags of slots `[first, first + 4)` of (row, head) in bits 0 to 3 (`first` a
  // multiple of 4).
  __attribute__((always_inline)) inline uint32_t kept4(int64_t row, int64_t head, int64_t heads,
                                                       int64_t first) const {
    if (!on) {
      return 0xF;
    }
    const uint64_t element = static_cast<uint64_t>((row * heads + head) * slots + first);
    const uint64_t bits = split_mix64(seed + (element >> 2) * GOLDEN_GAMMA);
    uint32_t kept = 0;
    for (uint32_t lane = 0; lane < 4; ++lane) {
      kept |= static_cast<uint32_t>(((bits >> (16 * lane)) & 0xFFFF) < threshold) << lane;
    }
    return kept;
  }
};

__attribute__((always_inline)) inline float dot(const float* a, const float* b, int64_t d) {
  Vec acc = {};
  int64_t c = 0;
  for (; c + BLOCK <= d; c += BLOCK) {
    acc += load(a + c) * load(b + c);
  }
  float total = sum(acc);
  for (; c < d; ++c) {
    total += a[c] * b[c];
  }
  return total;
}

// y += a x over `d` floats.
__attribute__((always_inline)) inline void axpy(float* y, float a, const float* x, int64_t d) {
  int64_t c = 0;
  for (; c + BLOCK <= d; c += BLOCK) {
    store(y + c, load(y + c) + a * load(x + c));
  }
  for (; c < d; ++c) {
    y[c] += a * x[c];
  }
}

// out[r][j] = sum_c a[r][c] packed[c][j] for ROWS rows `a` `[ROWS][d]` and `keys` packed columns
// `[d][keys]` (keys a multiple of BLOCK).
__attribute__((always_inline)) inline void products(const float* a, const float* packed,
                                                     int64_t d, int64_t keys, float* out) {
  for (int64_t j = 0; j < keys; j += BLOCK) {
    Vec acc[ROWS] = {};
    for (int64_t c = 0; c < d; ++c) {
      const Vec k = load(packed + c * keys + j);
      for (int64_t r = 0; r < ROWS; ++r) {
        acc[r] += a[r * d + c] * k;
      }
    }
    for (int64_t r = 0; r < ROWS; ++r) {
      store(out + r * keys + j, acc[r]);
    }
  }
}

// out[r] = sum_{j < n} weights[r][j] rows[j] for ROWS rows, `rows` `[n][d]`, `out` `[ROWS][d]`.
__attribute__((always_inline)) inline void weighted_sum(const float* weights, int64_t keys,
                                                         const float* rows, int64_t n, int64_t d,
                                                         float* out) {
  int64_t c = 0;
  for (; c + BLOCK <= d; c += BLOCK) {
    Vec acc[ROWS] = {};
    for (int64_t j = 0; j < n; ++j) {
      const Vec v = load(rows + j * d + c);
      for (int64_t r = 0; r < ROWS; ++r) {
        acc[r] += weights[r * keys + j] * v;
      }
    }
    for (int64_t r = 0; r < ROWS; ++r) {
      store(out + r * d + c, acc[r]);
    }
  }
  for (; c < d; ++c) {
    for (int64_t r = 0; r < ROWS; ++r) {
      float acc = 0.0f;
      for (int64_t j = 0; j < n; ++j) {
        acc += weights[r * keys + j] * rows[j * d + c];
      }
      out[r * d + c] = acc;
    }
  }
}

// The rows of query `i` of a sample (text, then markers) and of its partner (its own for text).
__attribute__((always_inline)) inline void rows_of(const Sample& s, int64_t i, int64_t& row,
                                                   int64_t& other) {
  const int64_t pairs = s.markers / 2, m = i - s.text;
  row = i >= s.text ? s.marker_row + m : s.text_row + i;
  other = i >= s.text ? s.marker_row + (m < pairs ? m + pairs : m - pairs) : row;
}

// Scratch of one training thread, for the longest text (`keys`, a multiple of BLOCK) and the
// most markers of the batch.
struct TrainScratch {
  std::vector<float> kt, vt, kr, q, dc, scores, weights, out, dk, dv, dk_markers, dv_markers;
  TrainScratch(int64_t d, int64_t keys, int64_t markers)
      : kt(d * keys), vt(keys * d), kr(keys * d), q(ROWS * d), dc(ROWS * d),
        scores(ROWS * keys), weights(ROWS * keys), out(ROWS * d), dk(keys * d), dv(keys * d),
        dk_markers(markers * d), dv_markers(markers * d) {}
};

// Packs a sample's text keys and values of `head`: `kt` `[d][keys]` (zero past the text), and
// the rows `[n][d]` of the keys into `kr` and of the values into `vr`, or values transposed
// into `vt` `[d][keys]` instead when `transposed_values`.
__attribute__((always_inline)) inline void pack_text(const float* qkv, const Layout& l,
                                                     int64_t head, int64_t keys, const Sample& s,
                                                     float* kt, float* kr, float* vr,
                                                     bool transposed_values) {
  const int64_t n = s.text, d = l.d;
  const int64_t k_off = l.hidden + head * d, v_off = 2 * l.hidden + head * d;
  for (int64_t j = 0; j < n; ++j) {
    const float* k = qkv + (s.text_row + j) * l.width + k_off;
    const float* v = qkv + (s.text_row + j) * l.width + v_off;
    if (kt != nullptr) {
      for (int64_t c = 0; c < d; ++c) {
        kt[c * keys + j] = k[c];
      }
    }
    if (kr != nullptr) {
      std::memcpy(kr + j * d, k, d * sizeof(float));
    }
    if (transposed_values) {
      for (int64_t c = 0; c < d; ++c) {
        vr[c * keys + j] = v[c];
      }
    } else {
      std::memcpy(vr + j * d, v, d * sizeof(float));
    }
  }
  for (int64_t c = 0; c < d; ++c) {
    if (kt != nullptr) {
      std::fill(kt + c * keys + n, kt + (c + 1) * keys, 0.0f);
    }
    if (transposed_values) {
      std::fill(vr + c * keys + n, vr + (c + 1) * keys, 0.0f);
    }
  }
}

// One (sample, head) task of the training forward pass: the context rows into `out`
// `[rows, H]` and the weights into `probs` `[rows, heads, slots]`.
SPAN_MARKER_CLONES
void attend_sample_train(const float* qkv, float* out, float* probs, const Layout& l,
                         int64_t head, float scale, int64_t keys, const Dropout& drop,
                         const Sample& s, TrainScratch& scratch) {
  const int64_t n = s.text, d = l.d, total_rows = n + s.markers;
  const int64_t q_off = head * d, k_off = l.hidden + head * d, v_off = 2 * l.hidden + head * d;
  pack_text(qkv, l, head, keys, s, scratch.kt.data(), nullptr, scratch.vt.data(), false);
  float* scores = scratch.scores.data();
  for (int64_t first = 0; first < total_rows; first += ROWS) {
    // The last group repeats its last row where it runs short (same values, written twice).
    int64_t row[ROWS], other[ROWS];
    bool marker[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      const int64_t i = std::min(first + r, total_rows - 1);
      marker[r] = i >= n;
      rows_of(s, i, row[r], other[r]);
      const float* q = qkv + row[r] * l.width + q_off;
      for (int64_t c = 0; c < d; ++c) {
        scratch.q[r * d + c] = q[c] * scale;
      }
    }
    products(scratch.q.data(), scratch.kt.data(), d, keys, scores);
    float own[ROWS], partner[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      float* row_scores = scores + r * keys;
      std::fill(row_scores + n, row_scores + keys, -1e30f);
      Vec top_v = load(row_scores);
      for (int64_t j = BLOCK; j < keys; j += BLOCK) {
        const Vec v = load(row_scores + j);
        top_v = v > top_v ? v : top_v;
      }
      float top = max(top_v);
      if (marker[r]) {
        const float* q = scratch.q.data() + r * d;
        const float a = dot(q, qkv + row[r] * l.width + k_off, d);
        const float b = dot(q, qkv + other[r] * l.width + k_off, d);
        top = std::max(top, std::max(a, b));
        own[r] = std::exp(a - top);
        partner[r] = std::exp(b - top);
      } else {
        own[r] = partner[r] = 0.0f;
      }
      Vec total_v = {};
      for (int64_t j = 0; j < keys; j += BLOCK) {
        const Vec e = exp_nonpositive(load(row_scores + j) - top);
        store(row_scores + j, e);
        total_v += e;
      }
      const float inverse = 1.0f / (sum(total_v) + own[r] + partner[r]);
      // The weights, their dropout, and what the backward pass needs of them.
      float* saved = probs + (row[r] * l.heads + head) * drop.slots;
      for (int64_t j = 0; j < keys + 4; j += 4) {
        const uint32_t kept = drop.kept4(row[r], head, l.heads, j);
        for (int64_t lane = 0; lane < 4; ++lane) {
          const int64_t slot = j + lane;
          float weight;
          if (slot < keys) {
            weight = row_scores[slot] * inverse;
          } else if (slot == keys) {
            weight = own[r] * inverse;
          } else if (slot == keys + 1) {
            weight = partner[r] * inverse;
          } else {
            weight = 0.0f;
          }
          const bool keep = (kept >> lane) & 1;
          saved[slot] = keep ? weight : -weight;
          const float dropped = keep ? weight * drop.scale : 0.0f;
          if (slot < keys) {
            row_scores[slot] = dropped;
          } else if (slot == keys) {
            own[r] = dropped;
          } else if (slot == keys + 1) {
            partner[r] = dropped;
          }
        }
      }
    }
    float* context = scratch.out.data();
    weighted_sum(scores, keys, scratch.vt.data(), n, d, context);
    for (int64_t r = 0; r < ROWS; ++r) {
      float* o = out + row[r] * l.hidden + head * d;
      std::memcpy(o, context + r * d, d * sizeof(float));
      axpy(o, own[r], qkv + row[r] * l.width + v_off, d);
      axpy(o, partner[r], qkv + other[r] * l.width + v_off, d);
    }
  }
}

// One (sample, head) task of the backward pass: from the context rows' gradient `grad`
// `[rows, H]` and the saved weights, the gradient of the query, key and value columns of `head`
// in the sample's rows of `dqkv` `[rows, 3H]` (every one of them written).
SPAN_MARKER_CLONES
void attend_sample_backward(const float* qkv, const float* probs, const float* grad,
                            float* dqkv, const Layout& l, int64_t head, float scale,
                            int64_t keys, const Dropout& drop, const Sample& s,
                            TrainScratch& scratch) {
  const int64_t n = s.text, d = l.d, total_rows = n + s.markers;
  const int64_t q_off = head * d, k_off = l.hidden + head * d, v_off = 2 * l.hidden + head * d;
  pack_text(qkv, l, head, keys, s, nullptr, scratch.kr.data(), scratch.vt.data(), true);
  float* dk = scratch.dk.data();
  float* dv = scratch.dv.data();
  float* dk_markers = scratch.dk_markers.data();
  float* dv_markers = scratch.dv_markers.data();
  std::fill(dk, dk + n * d, 0.0f);
  std::fill(dv, dv + n * d, 0.0f);
  std::fill(dk_markers, dk_markers + s.markers * d, 0.0f);
  std::fill(dv_markers, dv_markers + s.markers * d, 0.0f);
  float* q = scratch.q.data();
  float* dc = scratch.dc.data();
  // First the weights' gradients (after dropout), then the scores' (in place).
  float* ds = scratch.scores.data();
  float* w = scratch.weights.data();
  const int64_t pairs = s.markers / 2;
  for (int64_t first = 0; first < total_rows; first += ROWS) {
    int64_t row[ROWS], other[ROWS];
    bool valid[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      valid[r] = first + r < total_rows;
      rows_of(s, std::min(first + r, total_rows - 1), row[r], other[r]);
      const float* q_in = qkv + row[r] * l.width + q_off;
      const float* g = grad + row[r] * l.hidden + head * d;
      for (int64_t c = 0; c < d; ++c) {
        q[r * d + c] = q_in[c] * scale;
        dc[r * d + c] = valid[r] ? g[c] : 0.0f;
      }
    }
    products(dc, scratch.vt.data(), d, keys, ds);
    float ds_own[ROWS], ds_partner[ROWS], w_own[ROWS], w_partner[ROWS];
    for (int64_t r = 0; r < ROWS; ++r) {
      const bool marker = first + r >= n;
      const float* saved = probs + (row[r] * l.heads + head) * drop.slots;
      float* row_ds = ds + r * keys;
      float* row_w = w + r * keys;
      // dp = kept ? g * scale : 0 (g the weight after dropout's gradient), w = the weight
      // after dropout; the softmax's gradient subtracts sum_j p_j dp_j.
      Vec dot_v = {};
      const Vec zero = {};
      for (int64_t j = 0; j < keys; j += BLOCK) {
        const Vec p_signed = load(saved + j);
        IVec bits;
        std::memcpy(&bits, &p_signed, sizeof bits);
        const auto kept = bits >= IVec{};
        const Vec p = kept ? p_signed : -p_signed;
        const Vec dp = kept ? load(row_ds + j) * drop.scale : zero;
        store(row_w + j, kept ? p * drop.scale : zero);
        store(row_ds + j, dp);
        dot_v += p * dp;
      }
      float total = sum(dot_v);
      float p_own = 0.0f, p_partner = 0.0f, dp_own = 0.0f, dp_partner = 0.0f;
      w_own[r] = w_partner[r] = 0.0f;
      if (marker && valid[r]) {
        const float* g = dc + r * d;
        p_own = std::fabs(saved[keys]);
        p_partner = std::fabs(saved[keys + 1]);
        if (!std::signbit(saved[keys])) {
          dp_own = dot(g, qkv + row[r] * l.width + v_off, d) * drop.scale;
          w_own[r] = p_own * drop.scale;
        }
        if (!std::signbit(saved[keys + 1])) {
          dp_partner = dot(g, qkv + other[r] * l.width + v_off, d) * drop.scale;
          w_partner[r] = p_partner * drop.scale;
        }
        total += p_own * dp_own + p_partner * dp_partner;
      }
      for (int64_t j = 0; j < keys; j += BLOCK) {
        const Vec p_signed = load(saved + j);
        IVec bits;
        std::memcpy(&bits, &p_signed, sizeof bits);
        const Vec p = bits >= IVec{} ? p_signed : -p_signed;
        store(row_ds + j, p * (load(row_ds + j) - total));
      }
      ds_own[r] = p_own * (dp_own - total);
      ds_partner[r] = p_partner * (dp_partner - total);
    }
    // The queries' gradient: sum_j ds_j k_j over the text keys, own and partner, times scale.
    float* dq = scratch.out.data();
    weighted_sum(ds, keys, scratch.kr.data(), n, d, dq);
    for (int64_t r = 0; r < ROWS; ++r) {
      if (!valid[r]) {
        continue;
      }
      float* o = dq + r * d;
      axpy(o, ds_own[r], qkv + row[r] * l.width + k_off, d);
      axpy(o, ds_partner[r], qkv + other[r] * l.width + k_off, d);
      float* target = dqkv + row[r] * l.width + q_off;
      for (int64_t c = 0; c < d; ++c) {
        target[c] = o[c] * scale;
      }
    }
    // The text keys' and values' gradients (rows past the sample's contribute zeros).
    for (int64_t j = 0; j < n; ++j) {
      for (int64_t r = 0; r < ROWS; ++r) {
        axpy(dk + j * d, ds[r * keys + j], q + r * d, d);
        axpy(dv + j * d, w[r * keys + j], dc + r * d, d);
      }
    }
    // The markers' own and partner keys and values.
    for (int64_t r = 0; r < ROWS; ++r) {
      const int64_t i = first + r;
      if (!valid[r] || i < n) {
        continue;
      }
      const int64_t m = i - n, mate = m < pairs ? m + pairs : m - pairs;
      axpy(dk_markers + m * d, ds_own[r], q + r * d, d);
      axpy(dv_markers + m * d, w_own[r], dc + r * d, d);
      axpy(dk_markers + mate * d, ds_partner[r], q + r * d, d);
      axpy(dv_markers + mate * d, w_partner[r], dc + r * d, d);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    float* target = dqkv + (s.text_row + j) * l.width;
    std::memcpy(target + k_off, dk + j * d, d * sizeof(float));
    std::memcpy(target + v_off, dv + j * d, d * sizeof(float));
  }
  for (int64_t m = 0; m < s.markers; ++m) {
    float* target = dqkv + (s.marker_row + m) * l.width;
    std::memcpy(target + k_off, dk_markers + m * d, d * sizeof(float));
    std::memcpy(target + v_off, dv_markers + m * d, d * sizeof(float));
  }
}

int64_t keys_of(const Layout& l) { return (l.longest + BLOCK - 1) / BLOCK * BLOCK; }

int64_t most_markers(const Layout& l) {
  int64_t most = 0;
  for (const Sample& s : l.samples) {
    most = std::max(most, s.markers);
  }
  return most;
}

// The training form as a libtorch autograd function: the gradient flows to the query-key-value
// rows (the layout tensors and settings have none).
struct TrainingAttention : public torch::autograd::Function<TrainingAttention> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qkv_in,
                            const at::Tensor& num_tokens, const at::Tensor& start,
                            const at::Tensor& pairs, int64_t heads, int64_t padded_length,
                            double p, int64_t seed) {
    const at::Tensor qkv = qkv_in.contiguous();
    const Layout l = layout_of(qkv, num_tokens, start, pairs, heads, padded_length);
    const int64_t keys = keys_of(l), markers = most_markers(l);
    const Dropout drop(p, static_cast<uint64_t>(seed), keys);
    at::Tensor out = at::empty({l.rows, l.hidden}, qkv.options());
    at::Tensor probs = at::empty({l.rows, l.heads, drop.slots}, qkv.options());
    const float* in_ptr = qkv.data_ptr<float>();
    float* out_ptr = out.data_ptr<float>();
    float* probs_ptr = probs.data_ptr<float>();
    clear_padding(out_ptr, l.hidden, l);
    const float scale = 1.0f / std::sqrt(static_cast<float>(l.d));
    for_each_task(l, [&](int64_t begin, int64_t end, auto task_of) {
      TrainScratch scratch(l.d, keys, markers);
      for (int64_t t = begin; t < end; ++t) {
        const auto [head, b] = task_of(t);
        attend_sample_train(in_ptr, out_ptr, probs_ptr, l, head, scale, keys, drop,
                            l.samples[b], scratch);
      }
    });
    ctx->save_for_backward({qkv, probs, num_tokens, start, pairs});
    ctx->saved_data["heads"] = heads;
    ctx->saved_data["padded_length"] = padded_length;
    ctx->saved_data["p"] = p;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &qkv = saved[0], &probs = saved[1];
    const Layout l = layout_of(qkv, saved[2], saved[3], saved[4],
                               ctx->saved_data["heads"].toInt(),
                               ctx->saved_data["padded_length"].toInt());
    const int64_t keys = keys_of(l), markers = most_markers(l);
    // Only the scale and the slots are read: the mask is the saved weights' sign.
    const Dropout drop(ctx->saved_data["p"].toDouble(), 0, keys);
    const at::Tensor grad = grads[0].to(at::kFloat).contiguous();
    at::Tensor dqkv = at::empty({l.rows, l.width}, qkv.options());
    const float* in_ptr = qkv.data_ptr<float>();
    const float* probs_ptr = probs.data_ptr<float>();
    const float* grad_ptr = grad.data_ptr<float>();
    float* out_ptr = dqkv.data_ptr<float>();
    clear_padding(out_ptr, l.width, l);
    const float scale = 1.0f / std::sqrt(static_cast<float>(l.d));
    for_each_task(l, [&](int64_t begin, int64_t end, auto task_of) {
      TrainScratch scratch(l.d, keys, markers);
      for (int64_t t = begin; t < end; ++t) {
        const auto [head, b] = task_of(t);
        attend_sample_backward(in_ptr, probs_ptr, grad_ptr, out_ptr, l, head, scale, keys, drop,
                               l.samples[b], scratch);
      }
    });
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

}  // namespace

// The context rows `[rows, H]` of SpanMarker attention over `qkv` `[rows, 3H]` (float32, CPU):
// `num_tokens`, `start` and `pairs` `[B]` give each sample's text tokens, first start marker and
// marker pairs. With `padded_length` T > 0 sample `b` holds rows `[b T, (b + 1) T)` at its
// positions; with 0 the rows are only the tokens, each sample's text then its markers (the
// encoder's unpadded layout), and rows after the last sample are padding.
extern "C" at::Tensor* span_marker_marker_attention(const at::Tensor* qkv,
                                                    const at::Tensor* num_tokens,
                                                    const at::Tensor* start,
                                                    const at::Tensor* pairs, int64_t heads,
                                                    int64_t padded_length, char** error) {
  return span_marker::guarded(error, [&] {
    return new at::Tensor(marker_attention(*qkv, *num_tokens, *start, *pairs, heads, padded_length));
  });
}

// The training form of `span_marker_marker_attention`: dropout with probability `p` on the
// attention weights, its mask drawn from `seed`, and a gradient to `qkv` (a libtorch autograd
// function; float32, CPU).
extern "C" at::Tensor* span_marker_marker_attention_train(const at::Tensor* qkv,
                                                          const at::Tensor* num_tokens,
                                                          const at::Tensor* start,
                                                          const at::Tensor* pairs, int64_t heads,
                                                          int64_t padded_length, double p,
                                                          int64_t seed, char** error) {
  return span_marker::guarded(error, [&] {
    return new at::Tensor(TrainingAttention::apply(*qkv, *num_tokens, *start, *pairs, heads,
                                                   padded_length, p, seed));
  });
}
