// A bf16 matmul for XLA:CPU through oneDNN, called as an XLA typed-FFI custom call.
//
// out[M, N] = op(a) @ op(b), with a and b bf16, out float32 or bf16 (read from the result
// buffer). op(a) is a[M, K] stored row-major, or a[K, M] when transpose_a (the weight-gradient
// layout x.T @ g); op(b) likewise with transpose_b. Transposes are strides, never copies: oneDNN
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

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int, int64_t>;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

struct Entry {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};

const Entry& Primitive(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Entry>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto [m, k, n, ta, tb, out_f32, threads] = key;
  using dt = dnnl::memory::data_type;
  dnnl::memory::desc a_md({m, k}, dt::bf16, ta ? dnnl::memory::dims{1, m} : dnnl::memory::dims{k, 1});
  dnnl::memory::desc b_md({k, n}, dt::bf16, tb ? dnnl::memory::dims{1, k} : dnnl::memory::dims{n, 1});
  dnnl::memory::desc c_md({m, n}, out_f32 ? dt::f32 : dt::bf16, dnnl::memory::dims{n, 1});
  // A scratchpad of our own per call (below): XLA host devices execute the same primitive from
  // several threads at once, and a library-managed scratchpad is shared between them.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::matmul::primitive_desc pd(Engine(), a_md, b_md, c_md, attr);
  auto entry = std::make_unique<Entry>(Entry{pd, dnnl::matmul(pd)});
  return *cache.emplace(key, std::move(entry)).first->second;
}

ffi::Error MatmulImpl(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                      bool transpose_a, bool transpose_b, int64_t threads) {
  auto ad = a.dimensions(), bd = b.dimensions(), od = out->dimensions();
  if (ad.size() != 2 || bd.size() != 2 || od.size() != 2)
    return ffi::Error::InvalidArgument("onednn matmul: operands and result must be 2-D");
  if (a.element_type() != ffi::DataType::BF16 || b.element_type() != ffi::DataType::BF16)
    return ffi::Error::InvalidArgument("onednn matmul: operands must be bfloat16");
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
    Key key{m, k, n, transpose_a, transpose_b, out_f32, threads > 0 ? threads : omp_get_max_threads()};
    const Entry& e = Primitive(key);
    dnnl::memory am(e.pd.src_desc(), Engine(), a.untyped_data());
    dnnl::memory bm(e.pd.weights_desc(), Engine(), b.untyped_data());
    dnnl::memory cm(e.pd.dst_desc(), Engine(), out->untyped_data());
    thread_local dnnl::stream stream(Engine());
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
