// A bf16 matmul for XLA:CPU through oneDNN, called as an XLA typed-FFI custom call.
//
// out[M, N] = op(a) @ op(b), with a and b both bf16 or both float32, out float32 or bf16 (read
// from the buffers). Float32 operands are multiplied in bf16 too: oneDNN's bf16 fpmath mode rounds
// them to bf16 (to nearest even, as a convert would) while it packs its blocks, so a float32
// cotangent needs no conversion pass of its own before the call; the products and float32 sums
// are those of bf16 operands. op(a) is a[M, K] stored row-major, or a[K, M] when transpose_a (the
// weight-gradient layout x.T @ g); op(b) likewise with transpose_b. Transposes are strides, never copies: oneDNN
// picks its AMX/AVX-512 bf16 kernels for either layout.
//
// Primitives are created once per (shape, layout, result type) and kept: creating one costs far
// more than a small matmul. oneDNN's threads are its own OpenMP team, sized by the `threads`
// attribute (0: OpenMP's default), so that several XLA host devices calling at once share the
// cores rather than each starting a team as wide as the machine.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int, int64_t, bool>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Entry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
  // Float32 operands that oneDNN will not round itself (no AMX kernel in bf16 fpmath mode for this
  // shape; elsewhere the mode only permits bf16, and an f32 kernel would compute other numbers):
  // reorders write bf16 copies, then the bf16 matmul runs on them.
  bool convert = false;
  dnnl::reorder to_a, to_b;
};

dnnl::matmul::primitive_desc Describe(int64_t m, int64_t k, int64_t n, bool ta, bool tb, bool out_f32,
                                      dnnl::memory::data_type in, bool fpmath) {
  using dt = dnnl::memory::data_type;
  dnnl::memory::desc a_md({m, k}, in, ta ? dnnl::memory::dims{1, m} : dnnl::memory::dims{k, 1});
  dnnl::memory::desc b_md({k, n}, in, tb ? dnnl::memory::dims{1, k} : dnnl::memory::dims{n, 1});
  dnnl::memory::desc c_md({m, n}, out_f32 ? dt::f32 : dt::bf16, dnnl::memory::dims{n, 1});
  // A scratchpad of our own per call (below): XLA host devices execute the same primitive from
  // several threads at once, and a library-managed scratchpad is shared between them.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (fpmath) attr.set_fpmath_mode(dnnl::fpmath_mode::bf16);
  return dnnl::matmul::primitive_desc(Engine(), a_md, b_md, c_md, attr);
}

const Entry& Primitive(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto [m, k, n, ta, tb, out_f32, threads, in_f32] = key;
  using dt = dnnl::memory::data_type;
  auto entry = std::make_unique<Entry>();
  bool rounds = false;
  if (in_f32) {
    try {
      entry->pd = Describe(m, k, n, ta, tb, out_f32, dt::f32, true);
      rounds = std::string(entry->pd.impl_info_str()).find("amx") != std::string::npos;
    } catch (const dnnl::error&) {
    }
  }
  if (!in_f32 || !rounds) entry->pd = Describe(m, k, n, ta, tb, out_f32, dt::bf16, false);
  if (in_f32 && !rounds) {
    entry->convert = true;
    auto f32 = [](const dnnl::memory::desc& md) {
      return dnnl::memory::desc(md.get_dims(), dt::f32, md.get_strides());
    };
    const auto a16 = entry->pd.src_desc(), b16 = entry->pd.weights_desc();
    entry->to_a = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), f32(a16), Engine(), a16));
    entry->to_b = dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), f32(b16), Engine(), b16));
  }
  entry->prim = dnnl::matmul(entry->pd);
  return *cache.emplace(key, std::move(entry)).first->second;
}

ffi::Error MatmulImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                      bool transpose_a, bool transpose_b, int64_t threads) {
  auto ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || od.size() != 2)
    return ffi::Error::InvalidArgument("onednn matmul: operands and result must be 2-D");
  const bool in_f32 = a.element_type() == ffi::DataType::F32;
  if (a.element_type() != b.element_type() || (!in_f32 && a.element_type() != ffi::DataType::BF16))
    return ffi::Error::InvalidArgument("onednn matmul: operands must be both bfloat16 or both float32");
  const bool out_f32 = out->element_type() == ffi::DataType::F32;
  if (!out_f32 && out->element_type() != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("onednn matmul: result must be float32 or bfloat16");
  const int64_t m = transpose_a ? ad[1] : ad[0], k = transpose_a ? ad[0] : ad[1];
  const int64_t kb = transpose_b ? bd[1] : bd[0], n = transpose_b ? bd[0] : bd[1];
  if (k != kb || od[0] != m || od[1] != n)
    return ffi::Error::InvalidArgument("onednn matmul: shapes do not match");
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::fill_n(static_cast<char*>(out->untyped_data()), out->size_bytes(), 0);
    return ffi::Error::Success();
  }
  try {
    // The thread count is this calling thread's OpenMP setting; oneDNN sizes a primitive's work
    // split when it creates it, so the count is part of the key.
    if (threads > 0) omp_set_num_threads(static_cast<int>(threads));
    Key key{m, k, n, transpose_a, transpose_b, out_f32, threads > 0 ? threads : omp_get_max_threads(), in_f32};
    const Entry& e = Primitive(key);
    thread_local dnnl::stream stream(Engine());
    thread_local std::vector<char> a16, b16;
    dnnl::memory am, bm;
    if (e.convert) {
      const auto a_md = e.pd.src_desc(), b_md = e.pd.weights_desc();
      if (a16.size() < a_md.get_size()) a16.resize(a_md.get_size());
      if (b16.size() < b_md.get_size()) b16.resize(b_md.get_size());
      am = dnnl::memory(a_md, Engine(), a16.data());
      bm = dnnl::memory(b_md, Engine(), b16.data());
      using dt = dnnl::memory::data_type;
      dnnl::memory a32({a_md.get_dims(), dt::f32, a_md.get_strides()}, Engine(), a.untyped_data());
      dnnl::memory b32({b_md.get_dims(), dt::f32, b_md.get_strides()}, Engine(), b.untyped_data());
      e.to_a.execute(stream, a32, am);
      e.to_b.execute(stream, b32, bm);
    } else {
      am = dnnl::memory(e.pd.src_desc(), Engine(), a.untyped_data());
      bm = dnnl::memory(e.pd.weights_desc(), Engine(), b.untyped_data());
    }
    dnnl::memory cm(e.pd.dst_desc(), Engine(), out->untyped_data());
    thread_local std::vector<char> scratch;
    const size_t need = e.pd.scratchpad_desc().get_size();
    if (scratch.size() < need) scratch.resize(need);
    dnnl::memory sm(e.pd.scratchpad_desc(), Engine(), scratch.data());
    e.prim.execute(stream, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm},
                            {DNNL_ARG_SCRATCHPAD, sm}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("onednn matmul: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(W2sOnednnMatmul, MatmulImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<bool>("transpose_a")
                                  .Attr<bool>("transpose_b")
                                  .Attr<int64_t>("threads"));
