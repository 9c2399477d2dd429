//! Masks as scalar functions that only the policy rule can place in a plan.
//!
//! A [`MaskUdf`] is built by the rule and put straight into an `Expr`; it is never
//! registered in a session, so SQL cannot name it: `SELECT mask_hash(x)` is an unknown
//! function, and no user function can stand in for it.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use meshgate_contract::MaskKind;

use crate::HashKey;
use crate::masks::{apply, output_type};

#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaskUdf {
    kind: MaskKind,
    name: String,
    key: Arc<HashKey>,
    signature: Signature,
}

impl MaskUdf {
    pub(crate) fn new(kind: MaskKind, key: Arc<HashKey>) -> Self {
        MaskUdf {
            kind,
            name: format!("mask_{kind}"),
            key,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }

    pub(crate) fn kind(&self) -> MaskKind {
        self.kind
    }

    /// The id of the key a hash made by this function is keyed with.
    pub(crate) fn key_id(&self) -> &str {
        self.key.id()
    }

    pub(crate) fn name_str(&self) -> &str {
        &self.name
    }

    /// `mask(column)` as an expression.
    pub(crate) fn call(kind: MaskKind, key: &Arc<HashKey>, arg: Expr) -> Expr {
        ScalarUDF::new_from_impl(MaskUdf::new(kind, Arc::clone(key))).call(vec![arg])
    }
}

impl ScalarUDFImpl for MaskUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(output_type(self.kind, &arg_types[0]))
    }

    /// NULL stays NULL and nothing else becomes NULL, except under `null`: a masked column
    /// is as nullable as the contract says, so the caller's schema keeps its constraints.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let [arg] = args.arg_fields else {
            return exec_err!("{} takes one argument", self.name);
        };
        let nullable = arg.is_nullable() || self.kind == MaskKind::Null;
        Ok(Arc::new(Field::new(
            self.name(),
            output_type(self.kind, arg.data_type()),
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        let n = args.number_rows;
        let array = arg.to_array(n)?;
        let masked = apply(self.kind, &self.key, &array)
            .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::scalar::ScalarValue::try_from_array(&masked, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(masked),
        })
    }
}

/// Stands in for a function meshgate never runs (see `verify::LAYOUT_FUNCTIONS`): SQL that
/// names it is refused while it is planned, with the reason.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct RefusedUdf {
    name: String,
    signature: Signature,
}

impl RefusedUdf {
    pub(crate) fn new(name: &str) -> Self {
        RefusedUdf {
            name: name.to_string(),
            signature: Signature::one_of(
                vec![TypeSignature::Nullary, TypeSignature::VariadicAny],
                Volatility::Volatile,
            ),
        }
    }
}

impl ScalarUDFImpl for RefusedUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Err(crate::PolicyError::RefusedFunction(self.name.clone()).into())
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Err(crate::PolicyError::RefusedFunction(self.name.clone()).into())
    }
}
