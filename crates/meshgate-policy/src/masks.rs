//! The masks of docs/DESIGN.md §3 as vectorized kernels over Arrow arrays.
//!
//! NULL stays NULL under every mask. Kernels take the column as exposed by a contract
//! table (strings are `Utf8View`) and return the type [`output_type`] says: a masked
//! string keeps its string type, other values masked into text are `Utf8`.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, GenericStringBuilder, PrimitiveArray, StringArray, StringArrayType,
    new_null_array,
};
use arrow::buffer::{Buffer, OffsetBuffer};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use chrono::{DateTime, Datelike, NaiveDate};
use hmac::{Hmac, KeyInit, Mac};
use meshgate_contract::MaskKind;
use sha2::{Digest, Sha256};

/// Keys shorter than this are refused: HMAC's strength is the key's.
pub const MIN_KEY_LEN: usize = 16;

/// The deployment's key for the `hash` mask. It never appears in a plan, an error or a
/// log: `Debug` and `Display` show only its id (a digest prefix).
#[derive(Clone)]
pub struct HashKey {
    mac: Hmac<Sha256>,
    id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the hash key must be at least {MIN_KEY_LEN} bytes, got {0}")]
pub struct KeyTooShort(pub usize);

impl HashKey {
    pub fn new(key: &[u8]) -> Result<Self, KeyTooShort> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyTooShort(key.len()));
        }
        Ok(Self::from_bytes(key))
    }

    fn from_bytes(key: &[u8]) -> Self {
        let digest = Sha256::digest([b"meshgate-key-id:".as_slice(), key].concat());
        HashKey {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"),
            id: hex::encode(&digest[..4]),
        }
    }

    /// A stable, non-secret name for the key (for logs and, later, plan codecs).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 64-character lowercase hex HMAC-SHA256 of `value`.
    pub fn hash_hex(&self, value: &[u8]) -> String {
        let mut out = [0u8; 64];
        self.hash_into(value, &mut out);
        String::from_utf8(out.to_vec()).expect("hex is ASCII")
    }

    fn hash_into(&self, value: &[u8], out: &mut [u8]) {
        let mut mac = self.mac.clone();
        mac.update(value);
        hex::encode_to_slice(mac.finalize().into_bytes(), out).expect("64 bytes of room");
    }
}

impl PartialEq for HashKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}
impl Eq for HashKey {}

impl std::hash::Hash for HashKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HashKey(id={})", self.id)
    }
}

/// The type a mask yields for a column of type `input`.
pub fn output_type(kind: MaskKind, input: &DataType) -> DataType {
    match kind {
        MaskKind::Hash | MaskKind::Email | MaskKind::Last4 => text_type(input),
        MaskKind::Redact if is_string(input) => text_type(input),
        MaskKind::Redact | MaskKind::Null | MaskKind::Year => input.clone(),
    }
}

/// The text a mask yields for `input`: views stay views, anything else is `Utf8`.
fn text_type(input: &DataType) -> DataType {
    match input {
        DataType::Utf8View => DataType::Utf8View,
        _ => DataType::Utf8,
    }
}

/// `text` (a `Utf8` array) in the type [`text_type`] gives for `input`.
fn as_text_of(input: &DataType, text: ArrayRef) -> Result<ArrayRef, ArrowError> {
    match text_type(input) {
        DataType::Utf8 => Ok(text),
        other => cast(&text, &other),
    }
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

/// Applies one mask to one array.
pub fn apply(kind: MaskKind, key: &HashKey, values: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let ty = values.data_type();
    let text = match kind {
        MaskKind::Null => return Ok(new_null_array(ty, values.len())),
        MaskKind::Redact if !is_string(ty) => return Ok(new_null_array(ty, values.len())),
        MaskKind::Year => return year(values),
        MaskKind::Redact => map_strings(values, |_, out| out.push_str("****")),
        MaskKind::Hash => hash(key, values),
        MaskKind::Email => map_strings(values, |s, out| {
            out.push_str("****");
            if let Some(at) = s.rfind('@') {
                out.push_str(&s[at..]);
            }
        }),
        MaskKind::Last4 => map_strings(values, |s, out| {
            let n = s.chars().count();
            // Values of four characters or fewer are hidden whole: "all but the last 4"
            // would otherwise show them as they are.
            let keep = if n > 4 { 4 } else { 0 };
            out.extend(std::iter::repeat_n('*', n - keep));
            out.extend(s.chars().skip(n - keep));
        }),
    }?;
    as_text_of(ty, text)
}

/// HMAC-SHA256 over the UTF-8 text form of each value, as lowercase hex written straight
/// into the output buffer (no per-value allocation). Views and `Utf8` are read where they
/// are; anything else (a number, a date) is cast to its text form first.
fn hash(key: &HashKey, values: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    match values.data_type() {
        DataType::Utf8View => hash_text(key, values.as_string_view()),
        DataType::Utf8 => hash_text(key, values.as_string::<i32>()),
        _ => hash_text(key, cast(values, &DataType::Utf8)?.as_string::<i32>()),
    }
}

fn hash_text<'a>(key: &HashKey, text: impl StringArrayType<'a>) -> Result<ArrayRef, ArrowError> {
    let n = text.len();
    let mut data = vec![0u8; 64 * (n - text.null_count())];
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0i32);
    let mut end = 0usize;
    for i in 0..n {
        if text.is_valid(i) {
            key.hash_into(text.value(i).as_bytes(), &mut data[end..end + 64]);
            end += 64;
        }
        offsets.push(end as i32);
    }
    let array = StringArray::try_new(
        OffsetBuffer::new(offsets.into()),
        Buffer::from_vec(data),
        text.nulls().cloned(),
    )?;
    Ok(Arc::new(array))
}

/// `f` over each string value (views and `Utf8` read where they are).
fn map_strings(values: &ArrayRef, f: impl Fn(&str, &mut String)) -> Result<ArrayRef, ArrowError> {
    match values.data_type() {
        DataType::Utf8View => Ok(map_text(values.as_string_view(), f)),
        DataType::Utf8 => Ok(map_text(values.as_string::<i32>(), f)),
        _ => Ok(map_text(
            cast(values, &DataType::Utf8)?.as_string::<i32>(),
            f,
        )),
    }
}

fn map_text<'a>(text: impl StringArrayType<'a>, f: impl Fn(&str, &mut String)) -> ArrayRef {
    let mut out = GenericStringBuilder::<i32>::with_capacity(text.len(), text.len() * 8);
    let mut buf = String::new();
    for v in text.iter() {
        match v {
            Some(s) => {
                buf.clear();
                f(s, &mut buf);
                out.append_value(&buf);
            }
            None => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

/// Dates and timestamps truncated to 1 January (00:00 UTC) of their year.
fn year(values: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    fn jan1(year: i32) -> NaiveDate {
        NaiveDate::from_ymd_opt(year, 1, 1).expect("valid year")
    }
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    let days = |d: NaiveDate| (d - epoch).num_days();
    // Timestamps: `per_sec` units per second.
    fn ts<T: arrow::datatypes::ArrowTimestampType>(values: &ArrayRef, per_sec: i64) -> ArrayRef {
        let a: &PrimitiveArray<T> = values.as_primitive();
        let out: PrimitiveArray<T> = a.unary(|v| {
            let secs = v.div_euclid(per_sec);
            let y = DateTime::from_timestamp(secs, 0).map_or(1970, |d| d.year());
            jan1(y)
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp()
                * per_sec
        });
        Arc::new(out.with_data_type(values.data_type().clone()))
    }
    Ok(match values.data_type() {
        DataType::Date32 => {
            let a: &PrimitiveArray<Date32Type> = values.as_primitive();
            Arc::new(a.unary::<_, Date32Type>(|d| {
                let date = epoch + chrono::Duration::days(d as i64);
                days(jan1(date.year())) as i32
            }))
        }
        DataType::Date64 => {
            let a: &PrimitiveArray<Date64Type> = values.as_primitive();
            Arc::new(a.unary::<_, Date64Type>(|ms| {
                let date = DateTime::from_timestamp_millis(ms).map_or(epoch, |d| d.date_naive());
                days(jan1(date.year())) * 86_400_000
            }))
        }
        DataType::Timestamp(TimeUnit::Second, _) => ts::<TimestampSecondType>(values, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            ts::<TimestampMillisecondType>(values, 1_000)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            ts::<TimestampMicrosecondType>(values, 1_000_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            ts::<TimestampNanosecondType>(values, 1_000_000_000)
        }
        other => {
            return Err(ArrowError::InvalidArgumentError(format!(
                "the year mask applies to dates and timestamps, not {other}"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, Int64Array, TimestampMicrosecondArray};

    fn key() -> HashKey {
        HashKey::new(b"0123456789abcdef-test").unwrap()
    }

    fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    fn out(kind: MaskKind, input: ArrayRef) -> Vec<Option<String>> {
        let a = apply(kind, &key(), &input).unwrap();
        let a = cast(&a, &DataType::Utf8).unwrap();
        a.as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect()
    }

    #[test]
    fn hash_is_hmac_sha256_hex_of_the_text_form() {
        // Reproducible by a team holding the key: HMAC-SHA256("alice@example.com").
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"0123456789abcdef-test").unwrap();
        mac.update(b"alice@example.com");
        let expected = hex::encode(mac.finalize().into_bytes());
        let got = out(MaskKind::Hash, strings(&[Some("alice@example.com"), None]));
        assert_eq!(got, vec![Some(expected), None]);
        // Numbers hash through their text form, so "42" and 42 agree across products.
        let n = out(MaskKind::Hash, Arc::new(Int64Array::from(vec![42])));
        assert_eq!(n[0], out(MaskKind::Hash, strings(&[Some("42")]))[0]);
    }

    #[test]
    fn string_masks() {
        let input = strings(&[
            Some("alice@example.com"),
            Some("+1 555 0100"),
            Some("abc"),
            None,
        ]);
        assert_eq!(
            out(MaskKind::Email, Arc::clone(&input)),
            vec![
                Some("****@example.com".into()),
                Some("****".into()),
                Some("****".into()),
                None
            ]
        );
        assert_eq!(
            out(MaskKind::Last4, Arc::clone(&input)),
            vec![
                Some("*************.com".into()),
                Some("*******0100".into()),
                Some("***".into()),
                None
            ]
        );
        assert_eq!(
            out(MaskKind::Redact, Arc::clone(&input))[1],
            Some("****".into())
        );
        assert_eq!(out(MaskKind::Redact, input)[3], None);
    }

    #[test]
    fn non_string_masks_keep_the_type() {
        let n: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None]));
        for kind in [MaskKind::Redact, MaskKind::Null] {
            let a = apply(kind, &key(), &n).unwrap();
            assert_eq!(a.data_type(), &DataType::Int64);
            assert_eq!(a.null_count(), 2);
        }
        let d: ArrayRef = Arc::new(Date32Array::from(vec![Some(19_000), None])); // 2022-01-08
        let y = apply(MaskKind::Year, &key(), &d).unwrap();
        let y = y.as_primitive::<Date32Type>();
        assert_eq!(y.value(0), 18_993); // 2022-01-01
        assert!(y.is_null(1));
        let t: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![1_700_000_000_000_000]).with_timezone("UTC"),
        );
        let y = apply(MaskKind::Year, &key(), &t).unwrap();
        assert_eq!(y.data_type(), t.data_type());
        assert_eq!(
            y.as_primitive::<TimestampMicrosecondType>().value(0),
            1_672_531_200_000_000
        );
    }

    #[test]
    fn key_never_shows() {
        let k = HashKey::new(b"super-secret-key-material").unwrap();
        let shown = format!("{k:?}");
        assert!(!shown.contains("super-secret"), "{shown}");
        assert_eq!(HashKey::new(b"short").unwrap_err(), KeyTooShort(5));
    }

    #[test]
    fn string_views_are_masked_as_strings_and_stay_views() {
        let values = vec![
            Some("ada@example.com"),
            None,
            Some("+44 20 7946 0958"),
            Some(""),
        ];
        let classic: ArrayRef = Arc::new(StringArray::from(values.clone()));
        let views: ArrayRef = Arc::new(arrow::array::StringViewArray::from(values));
        for kind in [
            MaskKind::Hash,
            MaskKind::Redact,
            MaskKind::Null,
            MaskKind::Email,
            MaskKind::Last4,
        ] {
            let out = apply(kind, &key(), &views).unwrap();
            assert_eq!(out.data_type(), &DataType::Utf8View, "{kind}");
            assert_eq!(
                &output_type(kind, &DataType::Utf8View),
                out.data_type(),
                "{kind}"
            );
            let same = cast(&apply(kind, &key(), &classic).unwrap(), &DataType::Utf8View).unwrap();
            assert_eq!(
                out.as_ref(),
                same.as_ref(),
                "{kind}: same text as over Utf8"
            );
        }
        // A number masked into text is plain Utf8, as before.
        let n: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![7]));
        assert_eq!(output_type(MaskKind::Hash, n.data_type()), DataType::Utf8);
        assert_eq!(
            apply(MaskKind::Hash, &key(), &n).unwrap().data_type(),
            &DataType::Utf8
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn apply_one(kind: MaskKind, k: &HashKey, v: Option<&str>) -> Option<String> {
            let a: ArrayRef = Arc::new(StringArray::from(vec![v]));
            let out = apply(kind, k, &a).unwrap();
            let out = cast(&out, &DataType::Utf8).unwrap();
            out.as_string::<i32>()
                .iter()
                .next()
                .unwrap()
                .map(str::to_string)
        }

        const STRING_MASKS: [MaskKind; 5] = [
            MaskKind::Hash,
            MaskKind::Redact,
            MaskKind::Null,
            MaskKind::Email,
            MaskKind::Last4,
        ];

        proptest! {
            #[test]
            fn deterministic_and_null_preserving(v in ".{0,40}", which in 0usize..5) {
                let kind = STRING_MASKS[which];
                let k = key();
                prop_assert_eq!(apply_one(kind, &k, Some(&v)), apply_one(kind, &k, Some(&v)));
                prop_assert_eq!(apply_one(kind, &k, None), None);
            }

            #[test]
            fn never_returns_its_input(v in "[^*]{1,40}") {
                let k = key();
                for kind in STRING_MASKS {
                    let out = apply_one(kind, &k, Some(&v));
                    prop_assert_ne!(out.as_deref(), Some(v.as_str()), "{} returned its input", kind);
                }
            }

            #[test]
            fn hash_is_keyed_and_distinguishes_values(a in ".{1,40}", b in ".{1,40}") {
                let k1 = key();
                let k2 = HashKey::new(b"another-key-of-sufficient-length").unwrap();
                let h = |k: &HashKey, v: &str| apply_one(MaskKind::Hash, k, Some(v)).unwrap();
                prop_assert_ne!(h(&k1, &a), h(&k2, &a));
                prop_assert_eq!(h(&k1, &a).len(), 64);
                if a != b {
                    prop_assert_ne!(h(&k1, &a), h(&k1, &b));
                }
            }

            #[test]
            fn email_keeps_only_the_domain(local in "[a-z0-9.]{1,20}", domain in "[a-z]{1,10}\\.[a-z]{2,3}") {
                let out = apply_one(MaskKind::Email, &key(), Some(&format!("{local}@{domain}"))).unwrap();
                prop_assert_eq!(out, format!("****@{domain}"));
            }

            #[test]
            fn last4_keeps_length_and_at_most_four_characters(v in ".{0,30}") {
                let out = apply_one(MaskKind::Last4, &key(), Some(&v)).unwrap();
                prop_assert_eq!(out.chars().count(), v.chars().count());
                let shown = out.chars().zip(v.chars()).filter(|(o, i)| o == i && *o != '*').count();
                prop_assert!(shown <= 4);
            }

            #[test]
            fn year_is_january_first_of_the_same_year(d in -30_000i32..60_000) {
                let a: ArrayRef = Arc::new(Date32Array::from(vec![d]));
                let y = apply(MaskKind::Year, &key(), &a).unwrap();
                let out = y.as_primitive::<Date32Type>().value(0);
                let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
                let (i, o) = (epoch + chrono::Duration::days(d as i64), epoch + chrono::Duration::days(out as i64));
                prop_assert_eq!((o.year(), o.month(), o.day()), (i.year(), 1, 1));
            }
        }
    }
}
