// Unit tests and a mutation fuzzer for moe::json (run from safetensors-test.cpp's main).
#include <cmath>
#include <cstring>
#include <memory>
#include <random>

#include "../core/json.h"
#include "test-util.h"

using moe::json::ParseError;
using moe::json::Value;

namespace {

// Parses from an exact-size heap copy so ASan flags any read past the end.
Value parse_exact(const std::string& s) {
  std::unique_ptr<char[]> buf(new char[s.size() ? s.size() : 1]);
  std::memcpy(buf.get(), s.data(), s.size());
  return moe::json::parse(buf.get(), s.size());
}

std::string escape(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') { o += '\\'; o += static_cast<char>(c); }
    else if (c < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); o += b; }
    else o += static_cast<char>(c);
  }
  return o + "\"";
}

std::string dump(const Value& v) {
  switch (v.type()) {
    case moe::json::Type::Null: return "null";
    case moe::json::Type::Bool: return v.as_bool() ? "true" : "false";
    case moe::json::Type::Number: {
      if (v.is_int()) return std::to_string(v.as_int());
      char b[40]; std::snprintf(b, sizeof b, "%.17g", v.as_double()); return b;
    }
    case moe::json::Type::String: return escape(v.as_string());
    case moe::json::Type::Array: {
      std::string o = "[";
      for (size_t i = 0; i < v.as_array().size(); ++i) o += (i ? "," : "") + dump(v.as_array()[i]);
      return o + "]";
    }
    case moe::json::Type::Object: {
      std::string o = "{";
      bool first = true;
      for (const auto& kv : v.as_object()) { o += (first ? "" : ",") + escape(kv.first) + ":" + dump(kv.second); first = false; }
      return o + "}";
    }
  }
  return "";
}

void test_valid() {
  Value v = parse_exact(" {\"b\": [1, -2, 3.5, 1e3, -0, true, false, null], \"a\": \"x\", \"\": {}} \n");
  CHECK(v.is_object());
  CHECK(v.as_object().size() == 3);
  CHECK(v.as_object()[0].first == "b");  // document order kept
  CHECK(v.as_object()[1].first == "a");
  const auto& arr = v.find("b")->as_array();
  CHECK(arr.size() == 8);
  CHECK(arr[0].is_int() && arr[0].as_int() == 1);
  CHECK(arr[1].is_int() && arr[1].as_int() == -2);
  CHECK(!arr[2].is_int() && arr[2].as_double() == 3.5);
  CHECK(arr[3].is_int() && arr[3].as_int() == 1000);
  CHECK(arr[4].is_int() && arr[4].as_int() == 0);
  CHECK(arr[5].as_bool() && !arr[6].as_bool() && arr[7].is_null());
  CHECK(v.find("a")->as_string() == "x");
  CHECK(v.find("")->is_object());
  CHECK(v.find("zz") == nullptr);

  CHECK(parse_exact("9223372036854775807").as_int() == INT64_MAX);
  CHECK(parse_exact("-9223372036854775808").as_int() == INT64_MIN);
  Value big = parse_exact("9223372036854775808");
  CHECK(big.is_number() && !big.is_int());
  CHECK(parse_exact("1.5e-3").as_double() == 1.5e-3);
  CHECK(parse_exact("2.0").is_int());
  CHECK(parse_exact("1E+2").as_int() == 100);
  CHECK(parse_exact("1e300").as_double() == 1e300);

  CHECK(parse_exact(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse_exact(R"("\u0041\u00e9\u20AC")").as_string() == "A\xC3\xA9\xE2\x82\xAC");
  CHECK(parse_exact(R"("\ud83d\ude00")").as_string() == "\xF0\x9F\x98\x80");  // U+1F600
  CHECK(parse_exact(R"("\u0000")").as_string() == std::string(1, '\0'));
  CHECK(parse_exact("\"h\xC3\xA9llo \xF0\x9F\x98\x80\"").as_string() == "h\xC3\xA9llo \xF0\x9F\x98\x80");

  std::string deep;
  for (int i = 0; i < 64; ++i) deep += "[";
  for (int i = 0; i < 64; ++i) deep += "]";
  CHECK(parse_exact(deep).is_array());  // exactly at the limit
}

void test_invalid() {
  struct Bad { std::string text; size_t offset; };
  const Bad bad[] = {
      {"", 0}, {"   ", 3}, {"{", 1}, {"[", 1}, {"[1,]", 3}, {"[1 2]", 3}, {"{\"a\" 1}", 5},
      {"{\"a\":1,}", 7}, {"{a:1}", 1}, {"{\"a\":1}x", 7}, {"{} {}", 3}, {"nul", 0}, {"tru", 0},
      {"True", 0}, {"NaN", 0}, {"Infinity", 0}, {"-", 1}, {"01", 1}, {"1.", 2}, {".5", 0},
      {"1e", 2}, {"+1", 0}, {"1e999", 0}, {"-1e999", 0}, {"\"abc", 4}, {"\"a\nb\"", 2},
      {"\"\\x\"", 2}, {"\"\\u12\"", 5}, {"\"\\u12G4\"", 5}, {"\"\\ud800\"", 7}, {"\"\\udc00\"", 7},
      {"\"\\ud800\\u0041\"", 13}, {"\"\xC3\"", 1}, {"\"\xC0\xAF\"", 1}, {"\"\xED\xA0\x80\"", 1},
      {"\"\xF5\x80\x80\x80\"", 1}, {"\"\x80\"", 1}, {"\"\xE2\x82\"", 1}, {"{\"a\":1,\"a\":2}", 7},
      {std::string("[1]\0", 4), 3}, {"/*c*/1", 0}, {"[1]]", 3}, {"\"\t\"", 1},
  };
  for (const auto& b : bad) {
    ++moe_test::checks();
    try {
      parse_exact(b.text);
      ++moe_test::failures();
      std::fprintf(stderr, "FAIL json accepted invalid input: %s\n", b.text.c_str());
    } catch (const ParseError& e) {
      if (e.offset() != b.offset) {
        ++moe_test::failures();
        std::fprintf(stderr, "FAIL json \"%s\": offset %zu, expected %zu (%s)\n", b.text.c_str(), e.offset(), b.offset,
                     e.what());
      }
    }
  }
  std::string deep;
  for (int i = 0; i < 65; ++i) deep += "[";
  for (int i = 0; i < 65; ++i) deep += "]";
  EXPECT_THROW(ParseError, "depth 65", {"nesting deeper than 64"}, parse_exact(deep));
  std::string very_deep(100000, '[');  // must fail on depth, not overflow the stack
  EXPECT_THROW(ParseError, "depth 100000", {"nesting deeper than 64"}, parse_exact(very_deep));
  EXPECT_THROW(ParseError, "message", (std::vector<std::string>{"duplicate object key \"a\"", "at byte 7"}), parse_exact("{\"a\":1,\"a\":2}"));
  EXPECT_THROW(std::logic_error, "as_int on double", {"not an integer"}, parse_exact("1.5").as_int());
  EXPECT_THROW(std::logic_error, "as_string on number", {"number"}, parse_exact("1").as_string());
}

Value random_value(std::mt19937_64& rng, int depth) {
  int kind = static_cast<int>(rng() % (depth > 4 ? 5 : 7));
  switch (kind) {
    case 0: return Value();
    case 1: return Value::boolean(rng() & 1);
    case 2: { int64_t i = static_cast<int64_t>(rng()) >> (rng() % 64); return Value::number(static_cast<double>(i), true, i); }
    case 3: { double d = std::ldexp(static_cast<double>(rng() % 1000000) / 7.0, static_cast<int>(rng() % 40) - 20);
              return std::trunc(d) == d ? Value::number(d, true, static_cast<int64_t>(d)) : Value::number(d, false, 0); }
    case 4: {
      std::string s;
      const char* pieces[] = {"a", "\"", "\\", "\n", "\x01", "\xC3\xA9", "\xF0\x9F\x98\x80", " ", "z", "\xE2\x82\xAC"};
      for (int n = static_cast<int>(rng() % 6); n > 0; --n) s += pieces[rng() % 10];
      return Value::string(s);
    }
    case 5: { Value::Array a; for (int n = static_cast<int>(rng() % 5); n > 0; --n) a.push_back(random_value(rng, depth + 1)); return Value::array(std::move(a)); }
    default: {
      Value::Object o;
      for (int n = static_cast<int>(rng() % 5); n > 0; --n) o.emplace_back("k" + std::to_string(o.size()), random_value(rng, depth + 1));
      return Value::object(std::move(o));
    }
  }
}

std::string mutate(std::mt19937_64& rng, std::string s) {
  const char tokens[] = "{}[],:\"\\0123456789.eE+-tfnu \x80\xC3\xED\xF0\xFF";
  for (int m = 1 + static_cast<int>(rng() % 4); m > 0; --m) {
    size_t pos = s.empty() ? 0 : rng() % (s.size() + 1);
    switch (rng() % 6) {
      case 0: if (pos < s.size()) s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
      case 1: s.insert(pos, 1, tokens[rng() % (sizeof tokens - 1)]); break;
      case 2: if (pos < s.size()) s.erase(pos, 1 + rng() % 4); break;
      case 3: s.resize(pos); break;
      case 4: if (pos < s.size()) { size_t len = rng() % (s.size() - pos + 1); s.insert(rng() % (s.size() + 1), s.substr(pos, len)); } break;
      default: if (pos < s.size()) s[pos] = static_cast<char>(rng()); break;
    }
  }
  return s;
}

}  // namespace

void run_json_tests() {
  test_valid();
  test_invalid();
}

// Round trip of random documents, then mutations: every input either parses or throws
// ParseError (never another exception, never a sanitizer report); accepted ones round-trip.
void run_json_fuzz(int iterations, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> corpus = {
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,12]}})",
      R"([1,-2.5e-3,"\u00e9\ud83d\ude00",true,null,{"a":[[]]}])",
  };
  int accepted = 0;
  for (int it = 0; it < iterations; ++it) {
    if (it % 4 == 0) {
      std::string text = dump(random_value(rng, 0));
      Value v = parse_exact(text);
      CHECK_MSG(dump(v) == text, text);
      if (corpus.size() < 64) corpus.push_back(text);
    }
    std::string input = mutate(rng, corpus[rng() % corpus.size()]);
    try {
      Value v = parse_exact(input);
      ++accepted;
      std::string again = dump(v);
      CHECK_MSG(dump(parse_exact(again)) == again, input);
    } catch (const ParseError& e) {
      CHECK(e.offset() <= input.size());
    } catch (const std::exception& e) {
      CHECK_MSG(false, std::string("unexpected exception ") + e.what() + " on " + input);
    }
  }
  std::printf("json fuzz: %d inputs, %d accepted\n", iterations, accepted);
}
