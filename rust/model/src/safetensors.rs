//! A strict reader for the safetensors format: 8-byte little-endian header length, a JSON
//! header `{name: {dtype, shape, data_offsets}, "__metadata__"?: {string: string}}`, then
//! the data section that the offsets index into. Never panics on malformed input.

use serde::Deserialize;
use serde_json::Value;

/// The format's own limit on the header size.
const MAX_HEADER_BYTES: u64 = 100_000_000;
const METADATA_KEY: &str = "__metadata__";

/// One tensor's header entry, with its data located and size-checked.
#[derive(Debug, Clone)]
pub(crate) struct TensorInfo {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Byte range within the data section.
    pub start: usize,
    pub end: usize,
}

/// A parsed file borrowing its bytes; tensors sorted by name.
#[derive(Debug)]
pub(crate) struct SafeTensors<'a> {
    pub tensors: Vec<TensorInfo>,
    data: &'a [u8],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Bytes per element, for every dtype the format defines.
fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

impl<'a> SafeTensors<'a> {
    /// Parse and validate the header; errors are human-readable reasons.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<SafeTensors<'a>, String> {
        let Some(length_bytes) = bytes.get(..8) else {
            return Err(format!("file is {} bytes, shorter than the 8-byte header length", bytes.len()));
        };
        let header_len = u64::from_le_bytes(length_bytes.try_into().expect("8 bytes"));
        let available = (bytes.len() - 8) as u64;
        if header_len > available || header_len > MAX_HEADER_BYTES {
            return Err(format!("header length {header_len} exceeds the {available} bytes after it (or the 100 MB limit)"));
        }
        let header_end = 8 + header_len as usize;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..header_end]).map_err(|e| format!("header is not a JSON object: {e}"))?;
        let data = &bytes[header_end..];

        let mut tensors = Vec::with_capacity(header.len());
        for (name, entry) in header {
            if name == METADATA_KEY {
                check_metadata(&entry)?;
                continue;
            }
            let raw = RawTensor::deserialize(&entry).map_err(|e| format!("tensor {name:?}: bad header entry: {e}"))?;
            tensors.push(locate(name, raw, data.len())?);
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SafeTensors { tensors, data })
    }

    /// The raw bytes of a tensor (bounds were checked by `parse`).
    pub(crate) fn bytes(&self, tensor: &TensorInfo) -> &'a [u8] {
        &self.data[tensor.start..tensor.end]
    }

    /// A tensor's values as `f32`, for the float dtypes adapters use; `None` for other dtypes.
    #[cfg(test)]
    pub(crate) fn values_f32(&self, tensor: &TensorInfo) -> Option<Vec<f32>> {
        let mut values = Vec::new();
        let count = tensor.shape.iter().product::<u64>() as usize;
        self.read_f32(tensor, 0, count, &mut values).then_some(values)
    }

    /// Elements `first..first + count` of a float tensor (row-major) as `f32`, into `out`
    /// (replacing its contents). Reading a row at a time keeps memory flat for big adapters.
    /// Returns false for non-float dtypes; the range must lie within the tensor.
    pub(crate) fn read_f32(&self, tensor: &TensorInfo, first: usize, count: usize, out: &mut Vec<f32>) -> bool {
        let Some(size) = float_dtype_size(&tensor.dtype) else {
            return false;
        };
        let bytes = &self.bytes(tensor)[first * size..(first + count) * size];
        out.clear();
        match tensor.dtype.as_str() {
            "F32" => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
            "F16" => out.extend(bytes.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))),
            "BF16" => out.extend(bytes.chunks_exact(2).map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))),
            _ => out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)),
        }
        true
    }
}

/// Element size of the float dtypes LoRA weights may use.
pub(crate) fn float_dtype_size(dtype: &str) -> Option<usize> {
    match dtype {
        "F32" => Some(4),
        "F16" | "BF16" => Some(2),
        "F64" => Some(8),
        _ => None,
    }
}

fn check_metadata(entry: &Value) -> Result<(), String> {
    match entry {
        Value::Object(map) if map.values().all(Value::is_string) => Ok(()),
        _ => Err(format!("{METADATA_KEY} must be an object of strings")),
    }
}

/// Check the offsets against the data section and the shape/dtype byte size.
fn locate(name: String, raw: RawTensor, data_len: usize) -> Result<TensorInfo, String> {
    let [start, end] = raw.data_offsets;
    if start > end || end > data_len as u64 {
        return Err(format!("tensor {name:?}: data_offsets [{start}, {end}] out of bounds (data section is {data_len} bytes)"));
    }
    let element_size = dtype_size(&raw.dtype).ok_or_else(|| format!("tensor {name:?}: unknown dtype {:?}", raw.dtype))?;
    let expected = raw
        .shape
        .iter()
        .try_fold(element_size, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("tensor {name:?}: shape {:?} overflows", raw.shape))?;
    if expected != end - start {
        return Err(format!("tensor {name:?}: {} {:?} needs {expected} bytes but data_offsets span {}", raw.dtype, raw.shape, end - start));
    }
    Ok(TensorInfo { name, dtype: raw.dtype, shape: raw.shape, start: start as usize, end: end as usize })
}

/// IEEE half precision to single (exact: every f16 is representable as f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exponent = u32::from((h >> 10) & 0x1F);
    let mantissa = u32::from(h & 0x3FF);
    let bits = match (exponent, mantissa) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let magnitude = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -magnitude } else { magnitude };
        }
        (0x1F, m) => sign | 0x7F80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Serialise tensors (name, dtype, shape, little-endian bytes) as a safetensors file, for
/// tests and demo adapters. The header is space-padded to a multiple of 8 bytes as the
/// format recommends.
pub(crate) fn serialize(tensors: &[(String, &str, Vec<u64>, Vec<u8>)], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let meta = metadata.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        header.insert(METADATA_KEY.to_string(), Value::Object(meta));
    }
    let mut offset = 0u64;
    for (name, dtype, shape, data) in tensors {
        let end = offset + data.len() as u64;
        header.insert(name.clone(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("JSON of strings and numbers");
    let padded_len = header_bytes.len().div_ceil(8) * 8;
    header_bytes.resize(padded_len, b' ');
    let mut out = Vec::with_capacity(8 + header_bytes.len() + offset as usize);
    out.extend_from_slice(&(header_bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_tensor(dtype: &str, shape: Vec<u64>, data: Vec<u8>) -> Vec<u8> {
        serialize(&[("t".to_string(), dtype, shape, data)], &[("format", "pt")])
    }

    #[test]
    fn round_trips_f32() {
        let values = [1.5f32, -2.0, 0.25, 8.0];
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = one_tensor("F32", vec![2, 2], data);
        let st = SafeTensors::parse(&file).unwrap();
        assert_eq!(st.tensors.len(), 1);
        assert_eq!(st.tensors[0].shape, vec![2, 2]);
        assert_eq!(st.values_f32(&st.tensors[0]).unwrap(), values);
    }

    #[test]
    fn decodes_half_precisions() {
        // 1.0, -2.0, 0.5 and the smallest subnormal in f16; 1.0, -2.0 in bf16.
        let f16: Vec<u8> = [0x3C00u16, 0xC000, 0x3800, 0x0001].iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = one_tensor("F16", vec![4], f16);
        let st = SafeTensors::parse(&file).unwrap();
        assert_eq!(st.values_f32(&st.tensors[0]).unwrap(), [1.0, -2.0, 0.5, 2f32.powi(-24)]);

        let bf16: Vec<u8> = [0x3F80u16, 0xC000].iter().flat_map(|v| v.to_le_bytes()).collect();
        let file = one_tensor("BF16", vec![2], bf16);
        let st = SafeTensors::parse(&file).unwrap();
        assert_eq!(st.values_f32(&st.tensors[0]).unwrap(), [1.0, -2.0]);
        assert!(st.values_f32(&TensorInfo { dtype: "I8".into(), ..st.tensors[0].clone() }).is_none());
    }

    #[test]
    fn rejects_malformed_files() {
        let good = one_tensor("F32", vec![2], vec![0; 8]);
        assert!(SafeTensors::parse(&good).is_ok());
        assert!(SafeTensors::parse(&good[..5]).unwrap_err().contains("shorter"));
        assert!(SafeTensors::parse(&good[..20]).unwrap_err().contains("exceeds"));
        let mut garbled = good.clone();
        garbled[9] = b'#';
        assert!(SafeTensors::parse(&garbled).unwrap_err().contains("JSON"));
        let truncated_data = &good[..good.len() - 1];
        assert!(SafeTensors::parse(truncated_data).unwrap_err().contains("out of bounds"));
        let wrong_size = one_tensor("F32", vec![3], vec![0; 8]);
        assert!(SafeTensors::parse(&wrong_size).unwrap_err().contains("needs 12 bytes"));
        let unknown = one_tensor("Q4", vec![2], vec![0; 8]);
        assert!(SafeTensors::parse(&unknown).unwrap_err().contains("unknown dtype"));
    }
}
