// String `format`s enforced by guided decoding, each as a whole-string pattern (converted by
// json-schema-pattern.ts). Each generates a subset of what the format's RFC allows, chosen so the
// output also passes the validators clients use: ajv-formats, pydantic (EmailStr, UUID, datetime,
// date, time, timedelta, AnyUrl/HttpUrl, IPv4Address/IPv6Address) and zod 4's own format regexes.

const OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]\\d|\\d)';
const H16 = '[0-9a-fA-F]{1,4}';
const LABEL = '[a-z0-9]([a-z0-9-]*[a-z0-9])?';
// Months with their days (no 29 February: every year, leap or not).
const DATE = '[12]\\d{3}-((0[1-9]|1[0-2])-(0[1-9]|1\\d|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)';
const TIME = '([01]\\d|2[0-3]):[0-5]\\d:[0-5]\\d(\\.\\d{1,6})?';
const OFFSET = '(Z|[+-]([01]\\d|2[0-3]):[0-5]\\d)';
const PCHAR = "([A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})";
const DURATION_TIME = 'T(\\d+H(\\d+M)?(\\d+S)?|\\d+M(\\d+S)?|\\d+S)';

/** Format name → the pattern its strings match as a whole. */
export const FORMAT_PATTERNS: Record<string, string> = {
  // RFC 5321 dot-atoms (no quoted local parts) at a domain ending in a letters-only TLD.
  email: `[A-Za-z0-9_+-]+(\\.[A-Za-z0-9_+-]+)*@(${LABEL}\\.)+[a-z]{2,}`,
  // RFC 4122 variant, versions 1-8, lower case.
  uuid: '[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}',
  'date-time': `${DATE}T${TIME}${OFFSET}`,
  date: DATE,
  // RFC 3339 full-time: with an offset.
  time: `${TIME}${OFFSET}`,
  ipv4: `${OCTET}(\\.${OCTET}){3}`,
  ipv6: [
    `(${H16}:){7}${H16}`,
    `(${H16}:){1,7}:`,
    `(${H16}:){1,6}:${H16}`,
    `(${H16}:){1,5}(:${H16}){1,2}`,
    `(${H16}:){1,4}(:${H16}){1,3}`,
    `(${H16}:){1,3}(:${H16}){1,4}`,
    `(${H16}:){1,2}(:${H16}){1,5}`,
    `${H16}:(:${H16}){1,6}`,
    `:(:${H16}){1,7}`,
    '::',
  ].join('|'),
  // http(s) URLs with a DNS host (what pydantic's HttpUrl and zod's z.url() also accept).
  uri: `https?://${LABEL}(\\.${LABEL})*(:[1-9]\\d{0,3})?(/${PCHAR}*)*(\\?(${PCHAR}|[/?])*)?(#(${PCHAR}|[/?])*)?`,
  hostname: `${LABEL}(\\.${LABEL})*`,
  duration: `P(\\d+W|\\d+D(${DURATION_TIME})?|\\d+M(\\d+D)?(${DURATION_TIME})?|\\d+Y(\\d+M)?(\\d+D)?(${DURATION_TIME})?|${DURATION_TIME})`,
};

/** Integer bounds implied by an integer format. */
export const INTEGER_FORMAT_BOUNDS: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  uint32: [0n, 2n ** 32n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
  safeint: [-(2n ** 53n - 1n), 2n ** 53n - 1n],
};

/**
 * Patterns with lookarounds that well-known libraries write next to a format or alone, and what
 * guided decoding enforces instead (a subset of what they match).
 */
export const KNOWN_PATTERNS: Record<string, { format: string } | { pattern: string }> = {
  // zod 4 z.email() writes format 'email' and its "practical email" regex.
  "^(?!\\.)(?!.*\\.\\.)([A-Za-z0-9_'+\\-\\.]*)[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\\-]*\\.)+[A-Za-z]{2,}$": { format: 'email' },
  // zod 4 z.iso.duration().
  '^P(?:(\\d+W)|(?!.*W)(?=\\d|T\\d)(\\d+Y)?(\\d+M)?(\\d+D)?(T(?=\\d)(\\d+H)?(\\d+M)?(\\d+([.,]\\d+)?S)?)?)$': { format: 'duration' },
  // pydantic's Decimal (a string branch beside a number one): a number with at least one digit.
  '^(?!^[-+.]*$)[+-]?0*\\d*\\.?\\d*$': { pattern: '^[+-]?(\\d+(\\.\\d*)?|\\.\\d+)$' },
};
