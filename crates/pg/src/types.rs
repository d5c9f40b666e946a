//! Values in PostgreSQL's text format, both ways: [`ToSql`] for parameters (the server infers
//! their types from the statement), [`FromSql`] for columns (checked against the column's type
//! OID, so reading an `integer` as text or a NULL as `i64` is an error, not a surprise).

use std::ops::{Deref, Range};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;

/// A PostgreSQL type's object id.
pub type Oid = u32;

pub(crate) mod oid {
    use super::Oid;
    pub const BOOL: Oid = 16;
    pub const BYTEA: Oid = 17;
    pub const NAME: Oid = 19;
    pub const INT8: Oid = 20;
    pub const INT2: Oid = 21;
    pub const INT4: Oid = 23;
    pub const TEXT: Oid = 25;
    pub const JSON: Oid = 114;
    pub const UNKNOWN: Oid = 705;
    pub const BPCHAR: Oid = 1042;
    pub const VARCHAR: Oid = 1043;
    pub const JSONB: Oid = 3802;
}

/// Whether [`ToSql::to_sql`] wrote a value or stands for NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsNull {
    /// NULL: nothing was written.
    Yes,
    /// A value was written.
    No,
}

/// A query parameter, written in the text format.
pub trait ToSql {
    /// Appends the value's text form to `out`, or returns [`IsNull::Yes`] for NULL.
    fn to_sql(&self, out: &mut BytesMut) -> IsNull;
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        (**self).to_sql(out)
    }
}

macro_rules! display_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_sql(&self, out: &mut BytesMut) -> IsNull {
                out.put_slice(self.to_string().as_bytes());
                IsNull::No
            }
        }
    )*};
}
display_to_sql!(i16, i32, i64);

impl ToSql for bool {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        out.put_slice(if *self { b"t" } else { b"f" });
        IsNull::No
    }
}

impl ToSql for str {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        out.put_slice(self.as_bytes());
        IsNull::No
    }
}

impl ToSql for String {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        self.as_str().to_sql(out)
    }
}

/// `bytea` in its hex text form, `\x0a1b…`.
impl ToSql for [u8] {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.reserve(2 + 2 * self.len());
        out.put_slice(b"\\x");
        for b in self {
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 15)]);
        }
        IsNull::No
    }
}

impl ToSql for Vec<u8> {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        self.as_slice().to_sql(out)
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_sql(&self, out: &mut BytesMut) -> IsNull {
        match self {
            Some(v) => v.to_sql(out),
            None => IsNull::Yes,
        }
    }
}

/// A column value, read from the text format.
pub trait FromSql: Sized {
    /// From the text of a non-NULL value of a column of type `ty`; the error says why not.
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String>;

    /// From NULL: an error unless the type has room for it (`Option`).
    fn from_null(ty: Oid) -> Result<Self, String> {
        let _ = ty;
        Err("NULL into a non-Option value".into())
    }
}

fn text(raw: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_string())
}

fn integer<T: std::str::FromStr>(
    ty: Oid,
    raw: &[u8],
    accept: &[Oid],
    name: &str,
) -> Result<T, String> {
    if !accept.contains(&ty) {
        return Err(format!("type oid {ty} is not read as {name}"));
    }
    let s = text(raw)?;
    s.parse()
        .map_err(|_| format!("{s:?} is not a valid {name}"))
}

impl FromSql for i64 {
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        integer(ty, raw, &[oid::INT8, oid::INT4, oid::INT2], "i64")
    }
}

impl FromSql for i32 {
    /// `bigint` too, if the value fits.
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        integer(ty, raw, &[oid::INT8, oid::INT4, oid::INT2], "i32")
    }
}

impl FromSql for bool {
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        match (ty, raw) {
            (oid::BOOL, b"t") => Ok(true),
            (oid::BOOL, b"f") => Ok(false),
            (oid::BOOL, _) => Err("not a boolean (t/f)".into()),
            _ => Err(format!("type oid {ty} is not read as bool")),
        }
    }
}

impl FromSql for String {
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        const TEXTUAL: [Oid; 7] = [
            oid::TEXT,
            oid::VARCHAR,
            oid::BPCHAR,
            oid::NAME,
            oid::UNKNOWN,
            oid::JSON,
            oid::JSONB,
        ];
        if !TEXTUAL.contains(&ty) {
            return Err(format!("type oid {ty} is not read as String"));
        }
        text(raw).map(str::to_string)
    }
}

impl FromSql for Vec<u8> {
    /// The hex form `\x…` (the connection asks for `bytea_output = hex`).
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        if ty != oid::BYTEA {
            return Err(format!("type oid {ty} is not read as bytes"));
        }
        let hex = raw
            .strip_prefix(b"\\x")
            .ok_or("bytea not in the hex format")?;
        if hex.len() % 2 != 0 {
            return Err("bytea hex of odd length".into());
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err("bytea hex with a non-hex digit".to_string()),
        };
        hex.chunks_exact(2)
            .map(|p| Ok(nibble(p[0])? << 4 | nibble(p[1])?))
            .collect()
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(ty: Oid, raw: &[u8]) -> Result<Self, String> {
        T::from_sql(ty, raw).map(Some)
    }

    fn from_null(_: Oid) -> Result<Self, String> {
        Ok(None)
    }
}

/// A result column: its name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub(crate) name: String,
    pub(crate) type_oid: Oid,
}

impl Column {
    /// The column's name (or alias).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The column's type.
    pub fn type_oid(&self) -> Oid {
        self.type_oid
    }
}

/// One result row: the DataRow message's bytes and where each field lies in them.
#[derive(Clone)]
pub struct Row {
    pub(crate) columns: Arc<[Column]>,
    pub(crate) data: Bytes,
    /// One per column (checked on receipt); `None` is NULL.
    pub(crate) ranges: Vec<Option<Range<usize>>>,
}

impl Row {
    /// Column `idx` as `T`; a missing column, a type mismatch or an unexpected NULL is
    /// [`Error::Conversion`].
    pub fn get<T: FromSql>(&self, idx: usize) -> Result<T, Error> {
        let (Some(col), Some(range)) = (self.columns.get(idx), self.ranges.get(idx)) else {
            return Err(Error::Conversion(format!(
                "no column {idx} (the row has {})",
                self.ranges.len()
            )));
        };
        let value = match range {
            None => T::from_null(col.type_oid),
            Some(r) => match self.data.get(r.clone()) {
                Some(raw) => T::from_sql(col.type_oid, raw),
                None => Err("field outside the row".into()),
            },
        };
        value.map_err(|m| Error::Conversion(format!("column {idx} ({:?}): {m}", col.name)))
    }

    /// The number of columns.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the row has no columns.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The columns' names and types.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
}

impl std::fmt::Debug for Row {
    /// Names only: values may be secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.columns.iter().map(|c| &c.name))
            .finish()
    }
}

/// The rows a statement returned and the count its command tag reports (rows inserted,
/// updated, deleted or selected).
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub(crate) rows: Vec<Row>,
    pub(crate) affected: u64,
}

impl Rows {
    /// Rows affected (or returned), from the command tag; 0 for tags without a count.
    pub fn affected(&self) -> u64 {
        self.affected
    }

    /// The rows themselves.
    pub fn into_vec(self) -> Vec<Row> {
        self.rows
    }
}

impl Deref for Rows {
    type Target = [Row];
    fn deref(&self) -> &[Row] {
        &self.rows
    }
}

impl IntoIterator for Rows {
    type Item = Row;
    type IntoIter = std::vec::IntoIter<Row>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.into_iter()
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Row;
    type IntoIter = std::slice::Iter<'a, Row>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(v: &dyn ToSql) -> Option<Vec<u8>> {
        let mut b = BytesMut::new();
        match v.to_sql(&mut b) {
            IsNull::Yes => None,
            IsNull::No => Some(b.to_vec()),
        }
    }

    #[test]
    fn parameters_in_text() {
        assert_eq!(sql(&-42i64).unwrap(), b"-42");
        assert_eq!(sql(&i64::MIN).unwrap(), b"-9223372036854775808");
        assert_eq!(sql(&7i32).unwrap(), b"7");
        assert_eq!(sql(&true).unwrap(), b"t");
        assert_eq!(sql(&"é'\"").unwrap(), "é'\"".as_bytes());
        assert_eq!(sql(&String::from("x")).unwrap(), b"x");
        assert_eq!(sql(&&[0u8, 0x7f, 0xff][..]).unwrap(), b"\\x007fff");
        assert_eq!(sql(&vec![0xabu8]).unwrap(), b"\\xab");
        assert_eq!(sql(&None::<i64>), None);
        assert_eq!(sql(&Some("a")).unwrap(), b"a");
    }

    #[test]
    fn columns_from_text() {
        assert_eq!(
            i64::from_sql(oid::INT8, b"-9223372036854775808"),
            Ok(i64::MIN)
        );
        assert_eq!(i64::from_sql(oid::INT4, b"12"), Ok(12));
        assert!(i64::from_sql(oid::TEXT, b"12").is_err());
        assert!(i64::from_sql(oid::INT8, b"12x").is_err());
        assert!(i64::from_sql(oid::INT8, b"\xff").is_err());
        assert_eq!(i32::from_sql(oid::INT4, b"-5"), Ok(-5));
        assert!(i32::from_sql(oid::INT8, b"9223372036854775807").is_err());
        assert_eq!(bool::from_sql(oid::BOOL, b"t"), Ok(true));
        assert_eq!(bool::from_sql(oid::BOOL, b"f"), Ok(false));
        assert!(bool::from_sql(oid::BOOL, b"true").is_err());
        assert!(bool::from_sql(oid::INT4, b"1").is_err());
        assert_eq!(
            String::from_sql(oid::VARCHAR, "zoë".as_bytes()).as_deref(),
            Ok("zoë")
        );
        assert!(String::from_sql(oid::INT4, b"1").is_err());
        assert!(String::from_sql(oid::TEXT, b"\xc3").is_err());
        assert_eq!(
            Vec::<u8>::from_sql(oid::BYTEA, b"\\x00fFab"),
            Ok(vec![0, 0xff, 0xab])
        );
        assert_eq!(Vec::<u8>::from_sql(oid::BYTEA, b"\\x"), Ok(vec![]));
        for bad in [&b"\\x0"[..], b"\\xzz", b"00", b"\\000"] {
            assert!(Vec::<u8>::from_sql(oid::BYTEA, bad).is_err());
        }
        assert!(i64::from_null(oid::INT8).is_err());
        assert_eq!(Option::<i64>::from_null(oid::INT8), Ok(None));
        assert_eq!(Option::<i64>::from_sql(oid::INT8, b"3"), Ok(Some(3)));
    }

    #[test]
    fn row_get_errors_never_panic() {
        let row = Row {
            columns: vec![
                Column {
                    name: "n".into(),
                    type_oid: oid::INT8,
                },
                Column {
                    name: "s".into(),
                    type_oid: oid::TEXT,
                },
                Column {
                    name: "bad".into(),
                    type_oid: oid::TEXT,
                },
            ]
            .into(),
            data: Bytes::from_static(b"42"),
            ranges: vec![Some(0..2), None, Some(1..99)],
        };
        assert_eq!(row.get::<i64>(0).unwrap(), 42);
        assert_eq!(row.get::<Option<String>>(1).unwrap(), None);
        let e = row.get::<String>(1).unwrap_err();
        assert!(e.to_string().contains("NULL"), "{e}");
        assert!(matches!(row.get::<String>(0), Err(Error::Conversion(_))));
        assert!(matches!(row.get::<String>(2), Err(Error::Conversion(_))));
        assert!(matches!(row.get::<i64>(3), Err(Error::Conversion(_))));
        assert_eq!(format!("{row:?}"), r#"["n", "s", "bad"]"#);
    }
}
