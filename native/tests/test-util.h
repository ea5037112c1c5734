// A minimal check harness for the standalone native tests (no test framework offline).
#pragma once

#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace moe_test {

inline int& failures() { static int n = 0; return n; }
inline int& checks() { static int n = 0; return n; }

inline void check(bool ok, const char* expr, const char* file, int line, const std::string& note = "") {
  ++checks();
  if (ok) return;
  ++failures();
  std::fprintf(stderr, "FAIL %s:%d: %s %s\n", file, line, expr, note.c_str());
}

#define CHECK(e) ::moe_test::check(static_cast<bool>(e), #e, __FILE__, __LINE__)
#define CHECK_MSG(e, note) ::moe_test::check(static_cast<bool>(e), #e, __FILE__, __LINE__, note)

// Runs fn, expecting it to throw E whose what() contains every one of `needles`.
template <class E, class Fn>
void expect_throw(Fn&& fn, const std::vector<std::string>& needles, const char* file, int line,
                  const std::string& label) {
  ++checks();
  try {
    fn();
  } catch (const E& e) {
    std::string what = e.what();
    for (const auto& n : needles) {
      if (what.find(n) == std::string::npos) {
        ++failures();
        std::fprintf(stderr, "FAIL %s:%d [%s]: message \"%s\" lacks \"%s\"\n", file, line, label.c_str(),
                     what.c_str(), n.c_str());
        return;
      }
    }
    return;
  } catch (const std::exception& e) {
    ++failures();
    std::fprintf(stderr, "FAIL %s:%d [%s]: wrong exception type: %s\n", file, line, label.c_str(), e.what());
    return;
  }
  ++failures();
  std::fprintf(stderr, "FAIL %s:%d [%s]: no exception\n", file, line, label.c_str());
}

// needles: a braced list with one element, or a parenthesised std::vector<std::string>{...}.
#define EXPECT_THROW(E, label, needles, ...) \
  ::moe_test::expect_throw<E>([&]() { __VA_ARGS__; }, needles, __FILE__, __LINE__, label)

}  // namespace moe_test
