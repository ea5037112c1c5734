// Load-time placement on the CPU: the checkpoint's mapping is read in place, so placing means paging it in
// (with progress), coding bf16 matrices where the kernel set reads codes, and locking it when asked.
// Dummy weights are generated into host memory instead.
#include "core/dummy-weights.h"
#include "cpu/backend-cpu.h"

namespace moe {

void CpuBackend::place_weights(const ModelConfig& cfg, ModelWeights w, const PlaceOptions& o) {
  cfg_ = cfg;
  w_ = std::move(w);
  if (!w_.tensors) {
    fill_dummy_host(w_, pool_.size());
    if (o.progress) o.progress(static_cast<double>(w_.bytes), static_cast<double>(w_.bytes));
  } else {
    // Touching every page now keeps first requests from paying for disk reads.
    const double total = static_cast<double>(w_.tensors->total_bytes());
    double done = 0, last = 0;
    volatile uint8_t sink = 0;
    for (const auto& f : w_.tensors->files()) {
      f->advise_willneed();
      for (const auto& t : f->tensors()) {
        const uint8_t* p = static_cast<const uint8_t*>(t.data);
        for (size_t i = 0; i < t.nbytes; i += 4096) sink = sink + p[i];
        done += static_cast<double>(t.nbytes);
        if (o.progress && (done - last > total / 100 || done == total)) {
          last = done;
          o.progress(done, total);
        }
      }
    }
    (void)sink;
  }
  if (o.code_bf16 && k_.codes_bf16) code_weights();
  // Locked pages are never reclaimed, so a weight idle for a while (an expert no recent token chose) is
  // not read back from disk when it is next needed. A failure is reported, not fatal (as llama.cpp's).
  if (o.mlock) lock_weights(w_);
  stats_.bytes = w_.bytes;
  stats_.coded_matrices = w_.coded.size();
  stats_.coded_source_bytes = w_.coded_source_bytes;
  stats_.coded_bytes = w_.coded_bytes;
  stats_.coded_escapes = w_.coded_escapes;
  stats_.locked = w_.locked;
  stats_.lock_error = w_.lock_error;
}

}  // namespace moe
