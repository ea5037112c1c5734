#include "json.h"

#include <charconv>
#include <cmath>
#include <string_view>
#include <unordered_set>

namespace moe::json {

ParseError::ParseError(const std::string& what, size_t offset)
    : std::runtime_error(what + " at byte " + std::to_string(offset)), offset_(offset) {}

const char* type_name(Type t) {
  switch (t) {
    case Type::Null: return "null";
    case Type::Bool: return "boolean";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
  }
  return "?";
}

Value Value::boolean(bool b) { Value v; v.type_ = Type::Bool; v.bool_ = b; return v; }
Value Value::number(double d, bool is_int, int64_t i) {
  Value v; v.type_ = Type::Number; v.num_ = d; v.is_int_ = is_int; v.int_ = is_int ? i : 0; return v;
}
Value Value::string(std::string s) { Value v; v.type_ = Type::String; v.str_ = std::move(s); return v; }
Value Value::array(Array a) { Value v; v.type_ = Type::Array; v.arr_ = std::move(a); return v; }
Value Value::object(Object o) { Value v; v.type_ = Type::Object; v.obj_ = std::move(o); return v; }

static void expect(const Value& v, Type t) {
  if (v.type() != t)
    throw std::logic_error(std::string("json: value is ") + type_name(v.type()) + ", not " + type_name(t));
}
bool Value::as_bool() const { expect(*this, Type::Bool); return bool_; }
double Value::as_double() const { expect(*this, Type::Number); return num_; }
int64_t Value::as_int() const {
  if (!is_int()) throw std::logic_error("json: value is not an integer");
  return int_;
}
const std::string& Value::as_string() const { expect(*this, Type::String); return str_; }
const Value::Array& Value::as_array() const { expect(*this, Type::Array); return arr_; }
const Value::Object& Value::as_object() const { expect(*this, Type::Object); return obj_; }

const Value* Value::find(const std::string& key) const {
  if (type_ != Type::Object) return nullptr;
  for (const auto& kv : obj_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

namespace {

class Parser {
 public:
  Parser(const char* p, size_t n, int max_depth) : p_(p), n_(n), max_depth_(max_depth) {}

  Value document() {
    skip_ws();
    Value v = value(0);
    skip_ws();
    if (i_ != n_) fail("unexpected trailing characters");
    return v;
  }

 private:
  const char* p_;
  size_t n_;
  size_t i_ = 0;
  int max_depth_;

  [[noreturn]] void fail(const std::string& what) const { throw ParseError(what, i_); }
  bool eof() const { return i_ >= n_; }
  unsigned char peek() const { return static_cast<unsigned char>(p_[i_]); }

  void skip_ws() {
    while (!eof() && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  void literal(const char* word) {
    size_t start = i_;
    for (const char* w = word; *w; ++w, ++i_)
      if (eof() || p_[i_] != *w) throw ParseError(std::string("invalid literal, expected '") + word + "'", start);
  }

  Value value(int depth) {
    if (eof()) fail("unexpected end of input");
    switch (p_[i_]) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return Value::string(string());
      case 't': literal("true"); return Value::boolean(true);
      case 'f': literal("false"); return Value::boolean(false);
      case 'n': literal("null"); return Value();
      default:
        if (p_[i_] == '-' || (p_[i_] >= '0' && p_[i_] <= '9')) return number();
        fail("unexpected character");
    }
  }

  Value array(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_));
    ++i_;  // '['
    Value::Array out;
    skip_ws();
    if (!eof() && p_[i_] == ']') { ++i_; return Value::array(std::move(out)); }
    for (;;) {
      skip_ws();
      out.push_back(value(depth));
      skip_ws();
      if (eof()) fail("unterminated array");
      if (p_[i_] == ']') { ++i_; return Value::array(std::move(out)); }
      if (p_[i_] != ',') fail("expected ',' or ']' in array");
      ++i_;
    }
  }

  Value object(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_));
    ++i_;  // '{'
    Value::Object out;
    std::unordered_set<std::string> seen;
    skip_ws();
    if (!eof() && p_[i_] == '}') { ++i_; return Value::object(std::move(out)); }
    for (;;) {
      skip_ws();
      if (eof() || p_[i_] != '"') fail("expected a string key in object");
      size_t key_at = i_;
      std::string key = string();
      if (!seen.insert(key).second) throw ParseError("duplicate object key \"" + key + "\"", key_at);
      skip_ws();
      if (eof() || p_[i_] != ':') fail("expected ':' after object key");
      ++i_;
      skip_ws();
      Value v = value(depth);
      out.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (eof()) fail("unterminated object");
      if (p_[i_] == '}') { ++i_; return Value::object(std::move(out)); }
      if (p_[i_] != ',') fail("expected ',' or '}' in object");
      ++i_;
    }
  }

  unsigned hex4() {
    unsigned cp = 0;
    for (int k = 0; k < 4; ++k, ++i_) {
      if (eof()) fail("unterminated \\u escape");
      char c = p_[i_];
      unsigned d;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else fail("invalid hex digit in \\u escape");
      cp = cp * 16 + d;
    }
    return cp;
  }

  static void put_utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | (cp >> 18));
      s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // Copies one raw UTF-8 sequence starting at a lead byte >= 0x80, rejecting overlongs,
  // surrogates and code points above U+10FFFF.
  void raw_utf8(std::string& s) {
    unsigned char c = peek();
    int len;
    unsigned cp, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; min = 0x10000; }
    else fail("invalid UTF-8 lead byte in string");
    if (n_ - i_ < static_cast<size_t>(len)) fail("truncated UTF-8 sequence in string");
    for (int k = 1; k < len; ++k) {
      unsigned char cc = static_cast<unsigned char>(p_[i_ + k]);
      if ((cc & 0xC0) != 0x80) fail("invalid UTF-8 continuation byte in string");
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) fail("invalid UTF-8 sequence in string");
    s.append(p_ + i_, len);
    i_ += len;
  }

  std::string string() {
    ++i_;  // opening quote
    std::string s;
    for (;;) {
      if (eof()) fail("unterminated string");
      unsigned char c = peek();
      if (c == '"') { ++i_; return s; }
      if (c < 0x20) fail("unescaped control character in string");
      if (c >= 0x80) { raw_utf8(s); continue; }
      if (c != '\\') { s += static_cast<char>(c); ++i_; continue; }
      ++i_;
      if (eof()) fail("unterminated escape in string");
      char e = p_[i_++];
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (n_ - i_ < 2 || p_[i_] != '\\' || p_[i_ + 1] != 'u') fail("high surrogate not followed by \\u low surrogate");
            i_ += 2;
            unsigned lo = hex4();
            if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          put_utf8(s, cp);
          break;
        }
        default: --i_; fail("invalid escape in string");
      }
    }
  }

  Value number() {
    size_t start = i_;
    if (p_[i_] == '-') ++i_;
    auto digits = [&]() {
      size_t d = i_;
      while (!eof() && p_[i_] >= '0' && p_[i_] <= '9') ++i_;
      return i_ - d;
    };
    if (eof() || !(p_[i_] >= '0' && p_[i_] <= '9')) fail("expected a digit in number");
    if (p_[i_] == '0') {
      ++i_;
      if (!eof() && p_[i_] >= '0' && p_[i_] <= '9') fail("leading zero in number");
    } else {
      digits();
    }
    bool plain = true;
    if (!eof() && p_[i_] == '.') {
      ++i_; plain = false;
      if (digits() == 0) fail("expected a digit after '.' in number");
    }
    if (!eof() && (p_[i_] == 'e' || p_[i_] == 'E')) {
      ++i_; plain = false;
      if (!eof() && (p_[i_] == '+' || p_[i_] == '-')) ++i_;
      if (digits() == 0) fail("expected a digit in exponent");
    }
    const char* b = p_ + start;
    const char* e = p_ + i_;
    double d = 0;
    auto r = std::from_chars(b, e, d);
    // from_chars leaves d untouched on overflow and underflow alike; both are rejected
    // (a header has no use for 1e999 or 1e-999).
    if (r.ec == std::errc::result_out_of_range) { i_ = start; fail("number out of double range"); }
    if (r.ec != std::errc() || r.ptr != e) { i_ = start; fail("invalid number"); }
    if (plain) {
      int64_t v = 0;
      auto ri = std::from_chars(b, e, v);
      if (ri.ec == std::errc() && ri.ptr == e) return Value::number(d, true, v);
      return Value::number(d, false, 0);  // integer literal beyond int64
    }
    // 1e3 or 2.0: integral, and exactly an int64 when within 2^53.
    if (std::trunc(d) == d && std::fabs(d) <= 9007199254740992.0)
      return Value::number(d, true, static_cast<int64_t>(d));
    return Value::number(d, false, 0);
  }
};

}  // namespace

Value parse(const char* p, size_t n, int max_depth) {
  if (p == nullptr && n != 0) throw ParseError("null input", 0);
  return Parser(p, n, max_depth).document();
}

}  // namespace moe::json
