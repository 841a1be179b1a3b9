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

at::Tensor marker_attention(const at::Tensor& qkv_in, const at::Tensor& num_tokens,
                            const at::Tensor& start, const at::Tensor& pairs, int64_t heads,
                            int64_t padded_length) {
  TORCH_CHECK(qkv_in.dim() == 2 && qkv_in.scalar_type() == at::kFloat && qkv_in.is_cpu(),
              "marker attention: the query-key-value rows must be a float32 CPU [rows, 3H] "
              "tensor");
  const at::Tensor qkv = qkv_in.contiguous();
  const int64_t rows = qkv.size(0), width = qkv.size(1);
  TORCH_CHECK(width % 3 == 0 && heads > 0 && (width / 3) % heads == 0,
              "marker attention: ", width, " columns are not query, key and value of ", heads,
              " heads");
  const int64_t hidden = width / 3, d = hidden / heads;
  const auto host = [](const at::Tensor& t) { return t.to(at::kCPU, at::kLong).contiguous(); };
  const auto n = host(num_tokens), a = host(start), p = host(pairs);
  const int64_t batch = n.numel();
  TORCH_CHECK(a.numel() == batch && p.numel() == batch,
              "marker attention: one text length, marker start and pair count per sample");
  std::vector<Sample> samples(batch);
  int64_t next = 0;
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    Sample& s = samples[b];
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
      next = (b + 1) * padded_length;
    } else {
      // Unpadded rows: each sample's text, then its markers, samples one after another.
      s.text_row = next;
      s.marker_row = next + s.text;
      next += s.text + s.markers;
    }
    longest = std::max(longest, s.text);
  }
  TORCH_CHECK(next <= rows, "marker attention: the samples need ", next, " rows, the input has ",
              rows);
  // Rows that are neither text nor marker (padding) are zero; nothing reads them.
  at::Tensor out = at::empty({rows, hidden}, qkv.options());
  const float* in_ptr = qkv.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  const auto clear = [&](int64_t from, int64_t to) {
    std::fill(out_ptr + from * hidden, out_ptr + to * hidden, 0.0f);
  };
  for (int64_t b = 0; padded_length > 0 && b < batch; ++b) {
    const Sample& s = samples[b];
    clear(s.text_row + s.text, s.marker_row);
    clear(s.marker_row + s.markers, (b + 1) * padded_length);
  }
  clear(next, rows);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t keys = (longest + BLOCK - 1) / BLOCK * BLOCK;
  // Tasks run head-major: each thread's contiguous share of them then holds samples of every
  // length (batches come sorted longest first), not the long ones alone.
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(d, keys);
    for (int64_t task = begin; task < end; ++task) {
      attend_sample(in_ptr, out_ptr, width, hidden, task / batch, d, scale, samples[task % batch],
                    scratch);
    }
  });
  return out;
}

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
