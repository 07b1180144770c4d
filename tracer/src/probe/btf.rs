//! Minimal reader for raw kernel BTF (the format of `/sys/kernel/btf/vmlinux`).
//!
//! The tracer asks BTF for struct member offsets and enum values at load time
//! instead of hard-coding them, so one binary works across kernel versions.
//! Only the queries the tracer needs are implemented; everything else in the
//! type section is walked just far enough to find where each type ends.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where the running kernel exposes its own BTF.
const SYS_FS_PATH: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
/// Size of the fixed part of `struct btf_header`; newer kernels may append fields.
const HEADER_LEN: usize = 24;
/// Bounds every walk along type references, so a malformed (cyclic) blob
/// produces an error instead of looping forever or overflowing the stack.
const MAX_DEPTH: usize = 64;
/// Pointer size of the 64-bit kernels the tracer supports; BTF does not record it.
const POINTER_SIZE: u32 = 8;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors from reading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// A BTF file could not be read.
    #[error("cannot read BTF file {}: {source}; check that the path exists and is readable", path.display())]
    Io {
        /// File that failed to read.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The running kernel's BTF could not be read.
    #[error(
        "cannot read kernel BTF at {}: {source}; the kernel must be built with \
         CONFIG_DEBUG_INFO_BTF=y (check /boot/config-$(uname -r)) and the tracer needs read access",
        path.display()
    )]
    NoKernelBtf {
        /// Path of the kernel BTF file.
        path: PathBuf,
        /// Underlying I/O error.
        source: std::io::Error,
    },
    /// The blob is not valid BTF.
    #[error("malformed BTF: {0}; the data is not valid raw kernel BTF")]
    Malformed(String),
    /// No type with that name and a suitable kind exists.
    #[error(
        "BTF has no {kind} named `{name}`; this kernel version may not be supported by the tracer"
    )]
    NoType {
        /// What kind of type was looked for.
        kind: &'static str,
        /// Name that was looked up.
        name: String,
    },
    /// The struct exists but has no member at that path.
    #[error(
        "`{strukt}` has no member `{path}` on this kernel; the kernel layout differs from what the tracer expects"
    )]
    NoMember {
        /// Struct or union searched.
        strukt: String,
        /// Dot-separated member path.
        path: String,
    },
    /// A non-final path component is not a struct or union, so it cannot be descended into.
    #[error(
        "cannot descend into `{component}` of `{strukt}` (path `{path}`): it is not a struct or union"
    )]
    NotComposite {
        /// Struct or union searched.
        strukt: String,
        /// Dot-separated member path.
        path: String,
        /// Component that is not a struct or union.
        component: String,
    },
    /// The member is a bitfield, which has no byte offset.
    #[error(
        "member `{path}` of `{strukt}` is a bitfield and has no byte offset; read its containing word instead"
    )]
    Bitfield {
        /// Struct or union searched.
        strukt: String,
        /// Dot-separated member path.
        path: String,
    },
    /// The member's type has no size (void, forward declaration, function).
    #[error("member `{path}` of `{strukt}` has a type without a known size")]
    Unsized {
        /// Struct or union searched.
        strukt: String,
        /// Dot-separated member path.
        path: String,
    },
}

/// Fixed part of one type record; the kind-specific tail stays in `Btf::types`.
#[derive(Debug, Clone, Copy)]
struct TypeHeader {
    name_off: u32,
    info: u32,
    /// Size for sized kinds, referenced type id for the others (BTF overlays both).
    size_or_type: u32,
    /// Byte offset of the kind-specific tail inside `Btf::types`.
    tail: u32,
}

impl TypeHeader {
    fn kind(&self) -> u32 {
        (self.info >> 24) & 0x1f
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// One struct/union member, with its bit offset decoded.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
    /// Only known from the member itself when the parent has kind_flag set.
    bitfield_size: u32,
}

/// Parsed BTF type and string sections.
pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Index `i` holds type id `i + 1`; id 0 is the implicit `void`.
    headers: Vec<TypeHeader>,
    /// Name to the highest type id carrying it; older ids chain through `next_same_name`.
    by_name: HashMap<Box<str>, u32, FnvBuild>,
    /// Per type id (same indexing as `headers`), the next lower id with the same name, or 0.
    next_same_name: Vec<u32>,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The raw sections are megabytes; printing them helps nobody.
        f.debug_struct("Btf")
            .field("types", &self.headers.len())
            .field("string_bytes", &self.strings.len())
            .finish()
    }
}

/// FNV-1a: SipHash noticeably slows index construction in debug builds, and
/// the keys come from the kernel, so hash flooding is not a concern.
#[derive(Default, Clone, Copy)]
struct FnvBuild;

struct Fnv(u64);

impl std::hash::BuildHasher for FnvBuild {
    type Hasher = Fnv;
    fn build_hasher(&self) -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn read_u32(buf: &[u8], off: usize) -> Option<u32> {
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn malformed(msg: impl Into<String>) -> BtfError {
    BtfError::Malformed(msg.into())
}

/// Bytes of kind-specific data after the 12-byte common header.
fn tail_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        other => return Err(malformed(format!("unknown type kind {other}"))),
    })
}

fn is_modifier(kind: u32) -> bool {
    matches!(
        kind,
        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
    )
}

fn is_composite(kind: u32) -> bool {
    kind == KIND_STRUCT || kind == KIND_UNION
}

impl Btf {
    /// Parses a raw BTF blob (magic 0xeB9F, little-endian).
    pub fn parse(data: &[u8]) -> Result<Btf, BtfError> {
        let magic = data
            .get(0..2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed("blob shorter than the BTF magic"))?;
        if magic == MAGIC.swap_bytes() {
            return Err(malformed("big-endian BTF is not supported"));
        }
        if magic != MAGIC {
            return Err(malformed(format!(
                "bad magic {magic:#06x}, expected {MAGIC:#06x}"
            )));
        }
        if data.len() < HEADER_LEN {
            return Err(malformed("blob shorter than the BTF header"));
        }
        if data[2] != 1 {
            return Err(malformed(format!("unsupported BTF version {}", data[2])));
        }
        let field = |off| read_u32(data, off).map(|v| v as usize);
        let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
            (field(4), field(8), field(12), field(16), field(20))
        else {
            return Err(malformed("truncated header"));
        };
        if hdr_len < HEADER_LEN {
            return Err(malformed(format!("header length {hdr_len} is too small")));
        }
        // Section offsets are relative to the end of the header.
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| data.get(range))
                .ok_or_else(|| malformed(format!("{what} section lies outside the blob")))
        };
        let types = section(type_off, type_len, "type")?.to_vec();
        let strings = section(str_off, str_len, "string")?.to_vec();
        if !strings.is_empty() && strings[0] != 0 {
            return Err(malformed(
                "string section does not start with an empty string",
            ));
        }

        let headers = Self::walk_types(&types)?;
        let mut btf = Btf {
            types,
            strings,
            next_same_name: vec![0; headers.len()],
            by_name: HashMap::with_capacity_and_hasher(headers.len(), FnvBuild),
            headers,
        };
        btf.build_index()?;
        Ok(btf)
    }

    /// Reads and parses a raw BTF file.
    pub fn from_file(path: &Path) -> Result<Btf, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Reads and parses the running kernel's BTF from `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        let path = Path::new(SYS_FS_PATH);
        let data = std::fs::read(path).map_err(|source| BtfError::NoKernelBtf {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Byte offset of `path` (dot-separated, e.g. "__sk_common.skc_state") inside the struct or union `strukt`.
    pub fn member_offset(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        self.locate(strukt, path).map(|(offset, _)| offset)
    }

    /// Size in bytes of the member at `path` inside `strukt`, after resolving typedefs and modifiers.
    pub fn member_size(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        let (_, type_id) = self.locate(strukt, path)?;
        self.type_size(type_id, 0)?
            .ok_or_else(|| BtfError::Unsized {
                strukt: strukt.to_owned(),
                path: path.to_owned(),
            })
    }

    /// All (name, value) pairs of the enum (ENUM or ENUM64) named `name`.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>, BtfError> {
        // An enum forward declaration has vlen 0, so prefer the one with values.
        let id = self
            .ids_named(name)
            .filter(|&id| {
                self.header(id)
                    .is_ok_and(|h| matches!(h.kind(), KIND_ENUM | KIND_ENUM64))
            })
            .max_by_key(|&id| {
                (
                    self.header(id).map_or(0, |h| h.vlen()),
                    std::cmp::Reverse(id),
                )
            })
            .ok_or_else(|| BtfError::NoType {
                kind: "enum",
                name: name.to_owned(),
            })?;
        let hdr = self.header(id)?;
        let signed = hdr.kind_flag();
        let entry_len = if hdr.kind() == KIND_ENUM { 8 } else { 12 };
        let mut values = Vec::with_capacity(hdr.vlen());
        for i in 0..hdr.vlen() {
            let base = hdr.tail as usize + i * entry_len;
            let word = |n: usize| self.tail_u32(base + 4 * n);
            let value = if hdr.kind() == KIND_ENUM {
                let raw = word(1)?;
                if signed {
                    i64::from(raw as i32)
                } else {
                    i64::from(raw)
                }
            } else {
                // Values above i64::MAX wrap; no kernel enum the tracer reads is that large.
                (u64::from(word(2)?) << 32 | u64::from(word(1)?)) as i64
            };
            values.push((self.name(word(0)?)?.to_owned(), value));
        }
        Ok(values)
    }

    /// Whether a typedef named `name` exists, e.g. `btf_trace_tcp_send_reset`.
    pub fn has_typedef(&self, name: &str) -> bool {
        self.ids_named(name)
            .any(|id| self.header(id).is_ok_and(|h| h.kind() == KIND_TYPEDEF))
    }

    /// Number of tracepoint arguments (excluding the `void *` ctx) from typedef `btf_trace_<tracepoint>`.
    pub fn trace_arg_count(&self, tracepoint: &str) -> Option<usize> {
        let name = format!("btf_trace_{tracepoint}");
        let typedef = self
            .ids_named(&name)
            .find(|&id| self.header(id).is_ok_and(|h| h.kind() == KIND_TYPEDEF))?;
        let ptr = self.resolve(self.header(typedef).ok()?.size_or_type).ok()?;
        let hdr = self.header(ptr).ok()?;
        if hdr.kind() != KIND_PTR {
            return None;
        }
        let proto = self.resolve(hdr.size_or_type).ok()?;
        let hdr = self.header(proto).ok()?;
        if hdr.kind() != KIND_FUNC_PROTO {
            return None;
        }
        hdr.vlen().checked_sub(1)
    }

    /// Splits the type section into per-type headers, checking each tail fits.
    fn walk_types(types: &[u8]) -> Result<Vec<TypeHeader>, BtfError> {
        // The smallest record is 12 bytes, which bounds the count from above.
        let mut headers = Vec::with_capacity(types.len() / 16);
        let mut off = 0usize;
        while off < types.len() {
            let id = headers.len() + 1;
            let (Some(name_off), Some(info), Some(size_or_type)) = (
                read_u32(types, off),
                read_u32(types, off + 4),
                read_u32(types, off + 8),
            ) else {
                return Err(malformed(format!("type {id} is truncated")));
            };
            let tail = off + 12;
            let probe = TypeHeader {
                name_off,
                info,
                size_or_type,
                tail: 0,
            };
            let end = tail
                + tail_len(probe.kind(), probe.vlen())
                    .map_err(|e| malformed(format!("type {id}: {e}")))?;
            if end > types.len() {
                return Err(malformed(format!("type {id} runs past the type section")));
            }
            let tail =
                u32::try_from(tail).map_err(|_| malformed("type section larger than 4 GiB"))?;
            headers.push(TypeHeader { tail, ..probe });
            off = end;
        }
        Ok(headers)
    }

    fn build_index(&mut self) -> Result<(), BtfError> {
        for i in 0..self.headers.len() {
            let name_off = self.headers[i].name_off;
            if name_off == 0 {
                continue;
            }
            let id = i as u32 + 1;
            let name = Self::str_at(&self.strings, name_off)?;
            if let Some(prev) = self.by_name.get_mut(name) {
                self.next_same_name[i] = *prev;
                *prev = id;
            } else {
                self.by_name.insert(name.into(), id);
            }
        }
        Ok(())
    }

    fn str_at(strings: &[u8], off: u32) -> Result<&str, BtfError> {
        let rest = strings
            .get(off as usize..)
            .ok_or_else(|| malformed(format!("string offset {off} out of range")))?;
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| malformed(format!("string at {off} is not NUL-terminated")))?;
        std::str::from_utf8(&rest[..len])
            .map_err(|_| malformed(format!("string at {off} is not UTF-8")))
    }

    fn name(&self, off: u32) -> Result<&str, BtfError> {
        Self::str_at(&self.strings, off)
    }

    fn header(&self, id: u32) -> Result<TypeHeader, BtfError> {
        id.checked_sub(1)
            .and_then(|i| self.headers.get(i as usize))
            .copied()
            .ok_or_else(|| malformed(format!("reference to missing type id {id}")))
    }

    fn tail_u32(&self, off: usize) -> Result<u32, BtfError> {
        read_u32(&self.types, off).ok_or_else(|| malformed("type data out of range"))
    }

    /// Type ids carrying `name`, newest first.
    fn ids_named<'a>(&'a self, name: &str) -> impl Iterator<Item = u32> + 'a {
        let mut next = self.by_name.get(name).copied().unwrap_or(0);
        std::iter::from_fn(move || {
            let id = next;
            if id == 0 {
                return None;
            }
            next = self
                .next_same_name
                .get(id as usize - 1)
                .copied()
                .unwrap_or(0);
            Some(id)
        })
    }

    /// Follows typedef/const/volatile/restrict/type_tag links to the underlying type id.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            if id == 0 {
                return Ok(0);
            }
            let hdr = self.header(id)?;
            if !is_modifier(hdr.kind()) {
                return Ok(id);
            }
            id = hdr.size_or_type;
        }
        Err(malformed(format!(
            "type chain from id {id} is too deep or cyclic"
        )))
    }

    /// The struct/union to search for `name`: a real definition rather than a forward declaration,
    /// falling back to a typedef of one.
    fn composite_named(&self, name: &str) -> Result<u32, BtfError> {
        let mut fallback = None;
        for id in self.ids_named(name) {
            let hdr = self.header(id)?;
            if is_composite(hdr.kind()) {
                return Ok(id);
            }
            if hdr.kind() == KIND_TYPEDEF {
                let target = self.resolve(id)?;
                if target != 0 && is_composite(self.header(target)?.kind()) {
                    fallback = Some(target);
                }
            }
        }
        fallback.ok_or_else(|| BtfError::NoType {
            kind: "struct or union",
            name: name.to_owned(),
        })
    }

    fn member(&self, parent: &TypeHeader, index: usize) -> Result<Member, BtfError> {
        let base = parent.tail as usize + index * 12;
        let raw = self.tail_u32(base + 8)?;
        let (bit_offset, bitfield_size) = if parent.kind_flag() {
            (raw & 0x00ff_ffff, raw >> 24)
        } else {
            (raw, 0)
        };
        Ok(Member {
            name_off: self.tail_u32(base)?,
            type_id: self.tail_u32(base + 4)?,
            bit_offset,
            bitfield_size,
        })
    }

    /// Finds member `name` in composite `id`, looking through anonymous struct/union members.
    /// Returns the member (with its bit offset made relative to `id`) or None.
    fn find_member(&self, id: u32, name: &str, depth: usize) -> Result<Option<Member>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed("anonymous members nest too deeply"));
        }
        let hdr = self.header(id)?;
        for i in 0..hdr.vlen() {
            let m = self.member(&hdr, i)?;
            if m.name_off != 0 {
                if self.name(m.name_off)? == name {
                    return Ok(Some(m));
                }
                continue;
            }
            let inner = self.resolve(m.type_id)?;
            if inner == 0 || !is_composite(self.header(inner)?.kind()) {
                continue;
            }
            if let Some(found) = self.find_member(inner, name, depth + 1)? {
                let bit_offset = m
                    .bit_offset
                    .checked_add(found.bit_offset)
                    .ok_or_else(|| malformed("member offset overflows"))?;
                return Ok(Some(Member {
                    bit_offset,
                    ..found
                }));
            }
        }
        Ok(None)
    }

    /// Byte offset and (unresolved) type id of the member at `path`.
    fn locate(&self, strukt: &str, path: &str) -> Result<(u32, u32), BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            path: path.to_owned(),
        };
        let bitfield = || BtfError::Bitfield {
            strukt: strukt.to_owned(),
            path: path.to_owned(),
        };
        let mut current = self.composite_named(strukt)?;
        let mut bits: u64 = 0;
        let mut last: Option<Member> = None;
        for component in path.split('.') {
            if let Some(m) = last {
                let inner = self.resolve(m.type_id)?;
                if inner == 0 || !is_composite(self.header(inner)?.kind()) {
                    return Err(BtfError::NotComposite {
                        strukt: strukt.to_owned(),
                        path: path.to_owned(),
                        component: component.to_owned(),
                    });
                }
                current = inner;
            }
            let m = self
                .find_member(current, component, 0)?
                .ok_or_else(no_member)?;
            bits += u64::from(m.bit_offset);
            last = Some(m);
        }
        let m = last.ok_or_else(no_member)?;
        if m.bitfield_size != 0 || !bits.is_multiple_of(8) || self.is_int_bitfield(m.type_id)? {
            return Err(bitfield());
        }
        let offset = u32::try_from(bits / 8).map_err(|_| malformed("member offset overflows"))?;
        Ok((offset, m.type_id))
    }

    /// Detects the pre-kind_flag bitfield encoding, where the INT type itself carries the width.
    fn is_int_bitfield(&self, id: u32) -> Result<bool, BtfError> {
        let id = self.resolve(id)?;
        if id == 0 {
            return Ok(false);
        }
        let hdr = self.header(id)?;
        if hdr.kind() != KIND_INT {
            return Ok(false);
        }
        let enc = self.tail_u32(hdr.tail as usize)?;
        let bits = enc & 0xff;
        let bit_off = (enc >> 16) & 0xff;
        Ok(bit_off != 0 || u64::from(bits) != u64::from(hdr.size_or_type) * 8)
    }

    /// Size in bytes of type `id`, or None when it has none (void, FWD, functions).
    fn type_size(&self, id: u32, depth: usize) -> Result<Option<u32>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed("array nesting too deep or cyclic"));
        }
        let id = self.resolve(id)?;
        if id == 0 {
            return Ok(None);
        }
        let hdr = self.header(id)?;
        Ok(match hdr.kind() {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT
            | KIND_DATASEC => Some(hdr.size_or_type),
            KIND_PTR => Some(POINTER_SIZE),
            KIND_ARRAY => {
                let elem = self.tail_u32(hdr.tail as usize)?;
                let count = self.tail_u32(hdr.tail as usize + 8)?;
                match self.type_size(elem, depth + 1)? {
                    Some(size) => Some(
                        size.checked_mul(count)
                            .ok_or_else(|| malformed("array size overflows"))?,
                    ),
                    None => None,
                }
            }
            KIND_VAR => self.type_size(hdr.size_or_type, depth + 1)?,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds raw BTF blobs for tests; type ids are assigned in call order starting at 1.
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn word(&mut self, v: u32) {
            self.types.extend_from_slice(&v.to_le_bytes());
        }

        fn raw(&mut self, kind: u32, name: &str, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
            let name_off = self.str(name);
            self.word(name_off);
            self.word(vlen | kind << 24 | u32::from(kflag) << 31);
            self.word(size_or_type);
            self.next_id += 1;
            self.next_id - 1
        }

        fn int(&mut self, name: &str, size: u32, bits: u32, bit_off: u32) -> u32 {
            let id = self.raw(KIND_INT, name, 0, false, size);
            self.word(bits | bit_off << 16);
            id
        }

        fn refer(&mut self, kind: u32, name: &str, target: u32) -> u32 {
            self.raw(kind, name, 0, false, target)
        }

        fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.raw(KIND_ARRAY, "", 0, false, 0);
            self.word(elem);
            self.word(index);
            self.word(n);
            id
        }

        /// Members are (name, type id, offset word as stored).
        fn composite(
            &mut self,
            kind: u32,
            name: &str,
            size: u32,
            kflag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.raw(kind, name, members.len() as u32, kflag, size);
            for &(n, t, off) in members {
                let n = self.str(n);
                self.word(n);
                self.word(t);
                self.word(off);
            }
            id
        }

        fn enum32(&mut self, name: &str, signed: bool, values: &[(&str, i32)]) -> u32 {
            let id = self.raw(KIND_ENUM, name, values.len() as u32, signed, 4);
            for &(n, v) in values {
                let n = self.str(n);
                self.word(n);
                self.word(v as u32);
            }
            id
        }

        fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
            let id = self.raw(KIND_ENUM64, name, values.len() as u32, false, 8);
            for &(n, v) in values {
                let n = self.str(n);
                self.word(n);
                self.word(v as u32);
                self.word((v >> 32) as u32);
            }
            id
        }

        fn func_proto(&mut self, ret: u32, params: &[(&str, u32)]) -> u32 {
            let id = self.raw(KIND_FUNC_PROTO, "", params.len() as u32, false, ret);
            for &(n, t) in params {
                let n = self.str(n);
                self.word(n);
                self.word(t);
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            for v in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A blob exercising every kind plus the shapes member lookup must handle.
    fn synthetic() -> Vec<u8> {
        let mut b = Builder::new();
        // A forward declaration with the same name as the real struct, placed first.
        let _fwd = b.refer(KIND_FWD, "outer", 0);
        let int = b.int("int", 4, 32, 0);
        let uchar = b.int("unsigned char", 1, 8, 0);
        let u8_t = b.refer(KIND_TYPEDEF, "u8", uchar);
        let u8_alias = b.refer(KIND_TYPEDEF, "u8_alias", u8_t);
        let vol = b.refer(KIND_VOLATILE, "", u8_alias);
        let arr = b.array(vol, int, 16);
        let inner = b.composite(
            KIND_STRUCT,
            "inner",
            8,
            false,
            &[("a", int, 0), ("b", int, 32)],
        );
        let inner_td = b.refer(KIND_TYPEDEF, "inner_t", inner);
        let inner_const = b.refer(KIND_CONST, "", inner_td);
        let ptr = b.refer(KIND_PTR, "", inner);
        let anon_union = b.composite(
            KIND_UNION,
            "",
            8,
            false,
            &[("x", int, 0), ("named_inner", inner_const, 0)],
        );
        let anon_struct = b.composite(KIND_STRUCT, "", 8, false, &[("", anon_union, 0)]);
        let color = b.enum32("color", true, &[("RED", 0), ("GREEN", 1), ("NEGATIVE", -5)]);
        let _color_fwd = b.enum32("color", false, &[]);
        let big = b.enum64("big", &[("SMALL", 1), ("HUGE", 1 << 40)]);
        let tag = b.refer(KIND_TYPE_TAG, "user", ptr);
        b.composite(
            KIND_STRUCT,
            "outer",
            56,
            true,
            &[
                ("head", int, 0),
                ("", anon_struct, 64),
                ("flags", int, 3 << 24 | 128),
                ("flag2", int, 5 << 24 | 131),
                ("arr", arr, 160),
                ("state", color, 288),
                ("next", tag, 320),
                ("wide", big, 384),
            ],
        );
        let bf3 = b.int("bf3", 4, 3, 0);
        b.composite(
            KIND_STRUCT,
            "old_bf",
            8,
            false,
            &[("plain", int, 0), ("bits", bf3, 32), ("odd", int, 36)],
        );
        let void_ptr = b.refer(KIND_PTR, "", 0);
        let proto = b.func_proto(0, &[("__data", void_ptr), ("a", int), ("b", ptr)]);
        let proto_ptr = b.refer(KIND_PTR, "", proto);
        b.refer(KIND_TYPEDEF, "btf_trace_demo", proto_ptr);
        b.refer(KIND_FUNC, "demo", proto);
        let var = b.raw(KIND_VAR, "some_var", 0, false, int);
        b.word(1);
        b.raw(KIND_DATASEC, ".data", 1, false, 4);
        b.word(var);
        b.word(0);
        b.word(4);
        b.raw(KIND_FLOAT, "double", 0, false, 8);
        b.raw(KIND_DECL_TAG, "a_tag", 0, false, inner);
        b.word(u32::MAX);
        b.refer(KIND_RESTRICT, "", ptr);
        b.build()
    }

    #[test]
    fn synthetic_offsets_and_sizes() {
        let btf = Btf::parse(&synthetic()).expect("synthetic BTF parses");
        assert_eq!(btf.member_offset("outer", "head").unwrap(), 0);
        // Found through an anonymous struct and an anonymous union.
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "named_inner").unwrap(), 8);
        // Descends through const -> typedef into a named struct.
        assert_eq!(btf.member_offset("outer", "named_inner.b").unwrap(), 12);
        assert_eq!(btf.member_size("outer", "named_inner").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "arr").unwrap(), 20);
        // volatile -> typedef -> typedef -> unsigned char, 16 of them.
        assert_eq!(btf.member_size("outer", "arr").unwrap(), 16);
        assert_eq!(btf.member_offset("outer", "state").unwrap(), 36);
        assert_eq!(btf.member_size("outer", "state").unwrap(), 4);
        assert_eq!(btf.member_size("outer", "next").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "wide").unwrap(), 48);
        assert_eq!(btf.member_size("outer", "wide").unwrap(), 8);
        assert_eq!(btf.member_offset("inner_t", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("old_bf", "plain").unwrap(), 0);
    }

    #[test]
    fn synthetic_errors() {
        let btf = Btf::parse(&synthetic()).expect("synthetic BTF parses");
        for path in ["flags", "flag2"] {
            assert!(
                matches!(
                    btf.member_offset("outer", path),
                    Err(BtfError::Bitfield { .. })
                ),
                "{path} should be a bitfield"
            );
        }
        for path in ["bits", "odd"] {
            assert!(
                matches!(
                    btf.member_size("old_bf", path),
                    Err(BtfError::Bitfield { .. })
                ),
                "{path} should be a bitfield"
            );
        }
        assert!(matches!(
            btf.member_offset("outer", "missing"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("outer", "named_inner.missing"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("outer", "head.x"),
            Err(BtfError::NotComposite { .. })
        ));
        assert!(matches!(
            btf.member_offset("nonexistent", "x"),
            Err(BtfError::NoType { .. })
        ));
        assert!(matches!(
            btf.member_offset("int", "x"),
            Err(BtfError::NoType { .. })
        ));
        let err = btf.member_offset("outer", "missing").unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn synthetic_enums_and_typedefs() {
        let btf = Btf::parse(&synthetic()).expect("synthetic BTF parses");
        assert_eq!(
            btf.enum_values("color").unwrap(),
            vec![
                ("RED".to_owned(), 0),
                ("GREEN".to_owned(), 1),
                ("NEGATIVE".to_owned(), -5)
            ]
        );
        assert_eq!(
            btf.enum_values("big").unwrap(),
            vec![("SMALL".to_owned(), 1), ("HUGE".to_owned(), 1 << 40)]
        );
        assert!(matches!(
            btf.enum_values("outer"),
            Err(BtfError::NoType { .. })
        ));
        assert!(btf.has_typedef("btf_trace_demo"));
        assert!(btf.has_typedef("u8"));
        assert!(!btf.has_typedef("outer"));
        assert!(!btf.has_typedef("btf_trace_missing"));
        assert_eq!(btf.trace_arg_count("demo"), Some(2));
        assert_eq!(btf.trace_arg_count("missing"), None);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let good = synthetic();
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f]).is_err());
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert!(Btf::parse(&bad_magic).is_err());
        let mut big_endian = good.clone();
        big_endian.swap(0, 1);
        assert!(Btf::parse(&big_endian).is_err());
        let mut bad_version = good.clone();
        bad_version[2] = 2;
        assert!(Btf::parse(&bad_version).is_err());
        // Every truncation must be rejected without panicking.
        for len in 0..good.len() {
            assert!(Btf::parse(&good[..len]).is_err(), "truncated to {len}");
        }
        // Garbage in every header field and each type word must not panic.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            if let Ok(btf) = Btf::parse(&b) {
                let _ = btf.member_offset("outer", "named_inner.b");
                let _ = btf.member_size("outer", "arr");
                let _ = btf.enum_values("color");
                let _ = btf.trace_arg_count("demo");
            }
        }
    }

    #[test]
    fn cyclic_typedefs_are_an_error() {
        let mut b = Builder::new();
        // Type 1 and 2 refer to each other; a member of that type must not loop forever.
        b.refer(KIND_TYPEDEF, "loop_a", 2);
        b.refer(KIND_TYPEDEF, "loop_b", 1);
        b.composite(KIND_STRUCT, "s", 4, false, &[("m", 1, 0), ("", 1, 0)]);
        let btf = Btf::parse(&b.build()).expect("parses");
        assert!(btf.member_size("s", "m").is_err());
        assert!(btf.member_offset("s", "m.x").is_err());
        assert!(btf.member_offset("s", "other").is_err());
    }

    fn vmlinux() -> Option<Btf> {
        match Btf::from_sys_fs() {
            Ok(btf) => Some(btf),
            Err(BtfError::NoKernelBtf { .. }) => {
                eprintln!("skipping: {SYS_FS_PATH} is not readable");
                None
            }
            Err(e) => panic!("kernel BTF failed to parse: {e}"),
        }
    }

    #[test]
    fn vmlinux_offsets() {
        let Some(btf) = vmlinux() else { return };
        assert_eq!(
            btf.member_offset("sock", "__sk_common.skc_state").unwrap(),
            btf.member_offset("sock_common", "skc_state").unwrap()
        );
        assert!(btf.member_offset("sock", "sk_err").unwrap() > 0);
        assert_eq!(btf.member_size("sock_common", "skc_daddr").unwrap(), 4);
        assert_eq!(btf.member_size("tcp_sock", "bytes_received").unwrap(), 8);
        assert!(btf.member_offset("tcp_sock", "srtt_us").unwrap() > 0);
    }

    #[test]
    fn vmlinux_enums() {
        let Some(btf) = vmlinux() else { return };
        let rst = btf.enum_values("sk_rst_reason").unwrap();
        assert!(
            rst.contains(&("SK_RST_REASON_NO_SOCKET".to_owned(), 1)),
            "{rst:?}"
        );
        let drop = btf.enum_values("skb_drop_reason").unwrap();
        assert!(
            drop.iter().any(|(n, _)| n.ends_with("NETFILTER_DROP")),
            "{drop:?}"
        );
    }

    #[test]
    fn vmlinux_tracepoints() {
        let Some(btf) = vmlinux() else { return };
        assert_eq!(btf.trace_arg_count("inet_sock_set_state"), Some(3));
        assert_eq!(btf.trace_arg_count("kfree_skb"), Some(4));
        assert!(btf.has_typedef("btf_trace_tcp_retransmit_skb"));
        assert_eq!(btf.trace_arg_count("no_such_tracepoint"), None);
    }

    #[test]
    fn vmlinux_parse_time() {
        let Ok(data) = std::fs::read(SYS_FS_PATH) else {
            eprintln!("skipping: {SYS_FS_PATH} is not readable");
            return;
        };
        let start = std::time::Instant::now();
        let btf = Btf::parse(&data).unwrap();
        let elapsed = start.elapsed();
        eprintln!("parsed {btf:?} in {elapsed:?}");
        // Generous so a loaded CI machine running an unoptimised build does not flake.
        assert!(elapsed < std::time::Duration::from_secs(2), "{elapsed:?}");
    }
}
