// A small strict JSON parser (RFC 8259), written for safetensors headers.
// Strict means: no trailing garbage, no comments, no NaN/Infinity, no leading zeros,
// no control characters or invalid UTF-8 inside strings, no lone surrogates in \u escapes,
// no duplicate object keys, nesting at most `max_depth` arrays/objects deep.
// Every failure throws ParseError carrying the byte offset where parsing stopped.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace moe::json {

class ParseError : public std::runtime_error {
 public:
  ParseError(const std::string& what, size_t offset);
  size_t offset() const { return offset_; }

 private:
  size_t offset_;
};

enum class Type { Null, Bool, Number, String, Array, Object };
const char* type_name(Type t);

class Value {
 public:
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;  // keys in document order, unique

  Value() = default;  // null
  static Value boolean(bool b);
  static Value number(double d, bool is_int, int64_t i);
  static Value string(std::string s);
  static Value array(Array a);
  static Value object(Object o);

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::Null; }
  bool is_bool() const { return type_ == Type::Bool; }
  bool is_number() const { return type_ == Type::Number; }
  // True for a number whose value is an integer exactly representable as int64.
  bool is_int() const { return type_ == Type::Number && is_int_; }
  bool is_string() const { return type_ == Type::String; }
  bool is_array() const { return type_ == Type::Array; }
  bool is_object() const { return type_ == Type::Object; }

  // Accessors throw std::logic_error on a type mismatch (a caller bug: check is_*() first).
  bool as_bool() const;
  double as_double() const;
  int64_t as_int() const;
  const std::string& as_string() const;
  const Array& as_array() const;
  const Object& as_object() const;

  // Object member lookup (linear); nullptr when absent or when this is not an object.
  const Value* find(const std::string& key) const;

 private:
  Type type_ = Type::Null;
  bool bool_ = false;
  bool is_int_ = false;
  double num_ = 0;
  int64_t int_ = 0;
  std::string str_;
  Array arr_;
  Object obj_;
};

Value parse(const char* p, size_t n, int max_depth = 64);
inline Value parse(const std::string& s, int max_depth = 64) { return parse(s.data(), s.size(), max_depth); }

}  // namespace moe::json
