//! Card numbers, made impossible to log, trace, store or echo by their type.
//!
//! A [`CardNumber`] can only be built by deserialising a request body, which validates it. It
//! has no `Display`, its `Debug` shows the brand and last four digits only, it has no database
//! encoding, and the only way to read the digits is [`CardNumber::expose_digits`], which the
//! payment service's charge simulation and the serialisation of the forwarded charge request
//! use. Everything that is kept or shown is a [`MaskedCard`].

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A validated primary account number, held as a secret.
pub struct CardNumber(SecretString);

/// What may be kept and shown of a card: its brand and last four digits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedCard {
    /// `visa`, `mastercard`, `amex`, `discover` or `unknown`.
    pub brand: String,
    /// The last four digits.
    pub last4: String,
}

/// Why a string is not a card number. It never holds the digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardNumberError {
    /// Only digits (and spaces or dashes between groups) are allowed.
    #[error("card number must contain only digits")]
    NotDigits,
    /// Card numbers have 12 to 19 digits.
    #[error("card number must have 12 to 19 digits")]
    Length,
    /// The check digit is wrong.
    #[error("card number fails the Luhn check")]
    Luhn,
}

impl CardNumber {
    /// Validates `input` (digits, optionally grouped by spaces or dashes) and wraps it.
    pub fn parse(input: &str) -> Result<Self, CardNumberError> {
        let digits: String = input.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardNumberError::NotDigits);
        }
        if !(12..=19).contains(&digits.len()) {
            return Err(CardNumberError::Length);
        }
        if !luhn::valid(&digits) {
            return Err(CardNumberError::Luhn);
        }
        Ok(Self(SecretString::from(digits)))
    }

    /// The digits. Only the payment simulation and the charge request's serialisation call
    /// this; grep for it when auditing where card data goes.
    pub fn expose_digits(&self) -> &str {
        self.0.expose_secret()
    }

    /// The brand and last four digits, the only part of a card that is ever kept or shown.
    pub fn masked(&self) -> MaskedCard {
        let digits = self.expose_digits();
        MaskedCard {
            brand: brand(digits).to_owned(),
            last4: digits[digits.len() - 4..].to_owned(),
        }
    }
}

/// The brand from the issuer identification number prefix (the common ranges only).
fn brand(digits: &str) -> &'static str {
    let prefix2: u32 = digits[..2].parse().unwrap_or(0);
    let prefix4: u32 = digits[..4].parse().unwrap_or(0);
    match () {
        () if digits.starts_with('4') => "visa",
        () if (51..=55).contains(&prefix2) || (2221..=2720).contains(&prefix4) => "mastercard",
        () if prefix2 == 34 || prefix2 == 37 => "amex",
        () if digits.starts_with("6011") || prefix2 == 65 => "discover",
        () => "unknown",
    }
}

impl fmt::Debug for CardNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let MaskedCard { brand, last4 } = self.masked();
        write!(f, "CardNumber({brand} ****{last4})")
    }
}

impl<'de> Deserialize<'de> for CardNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = deserializer.deserialize_any(SecretStr("a card number"))?;
        // The error names the rule that failed, never the input.
        Self::parse(raw.expose_secret()).map_err(de::Error::custom)
    }
}

/// A card's expiry month, written `MM/YY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// 1 to 12.
    pub month: u8,
    /// Two digits.
    pub year: u8,
}

impl<'de> Deserialize<'de> for Expiry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let invalid = || de::Error::custom("expiry must be MM/YY");
        let (month, year) = text.split_once('/').ok_or_else(invalid)?;
        let (month, year): (u8, u8) = (
            month.parse().map_err(|_| invalid())?,
            year.parse().map_err(|_| invalid())?,
        );
        if !(1..=12).contains(&month) || year > 99 {
            return Err(invalid());
        }
        Ok(Self { month, year })
    }
}

impl Serialize for Expiry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:02}/{:02}", self.month, self.year))
    }
}

/// A card verification code: three or four digits, held as a secret.
pub struct Cvc(SecretString);

impl Cvc {
    /// The digits; only the forwarded charge request reads them.
    pub fn expose_digits(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Cvc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cvc(***)")
    }
}

impl<'de> Deserialize<'de> for Cvc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = deserializer.deserialize_any(SecretStr("a CVC"))?;
        let digits = raw.expose_secret();
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(de::Error::custom("cvc must be 3 or 4 digits"));
        }
        Ok(Self(raw))
    }
}

impl Serialize for Cvc {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose_digits())
    }
}

/// Reads a string into a secret. serde's own errors quote the offending value ("invalid
/// type: integer `4242…`"), so every other JSON type is refused with a message naming only
/// what was expected.
struct SecretStr(&'static str);

impl de::Visitor<'_> for SecretStr {
    type Value = SecretString;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as a string", self.0)
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<SecretString, E> {
        Ok(SecretString::from(value))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<SecretString, E> {
        Err(E::custom(format_args!("{} must be a string", self.0)))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<SecretString, E> {
        Err(E::custom(format_args!("{} must be a string", self.0)))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<SecretString, E> {
        Err(E::custom(format_args!("{} must be a string", self.0)))
    }
}

/// Serialising writes the digits: it exists so that the gateway and the order service can
/// forward a charge to the payment service. No response or log type holds a `CardNumber`.
impl Serialize for CardNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.expose_digits())
    }
}

/// The payment part of an order request: card number, expiry and CVC, all secret.
#[derive(Debug, Serialize, Deserialize)]
pub struct PaymentCard {
    /// The card number.
    pub card_number: CardNumber,
    /// Expiry as `MM/YY`.
    pub expiry: Expiry,
    /// The card verification code.
    pub cvc: Cvc,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_number_is_masked_to_brand_and_last_four() {
        let card = CardNumber::parse("4242 4242 4242 4242").unwrap();
        assert_eq!(
            card.masked(),
            MaskedCard {
                brand: "visa".into(),
                last4: "4242".into()
            }
        );
        assert_eq!(format!("{card:?}"), "CardNumber(visa ****4242)");
    }

    #[test]
    fn a_number_failing_luhn_is_rejected_without_echoing_it() {
        let err = serde_json::from_str::<CardNumber>("\"4242424242424241\"").unwrap_err();
        assert!(err.to_string().contains("Luhn"));
        assert!(!err.to_string().contains("4242424242424241"));
    }

    #[test]
    fn a_number_sent_as_a_json_number_is_refused_without_echoing_it() {
        let err = serde_json::from_str::<CardNumber>("4242424242424242").unwrap_err();
        assert!(!err.to_string().contains("4242424242424242"), "{err}");
        let err = serde_json::from_str::<Cvc>("123").unwrap_err();
        assert!(!err.to_string().contains("123"), "{err}");
    }

    #[test]
    fn letters_and_short_numbers_are_rejected() {
        assert_eq!(
            CardNumber::parse("4242abcd").unwrap_err(),
            CardNumberError::NotDigits
        );
        assert_eq!(
            CardNumber::parse("4242").unwrap_err(),
            CardNumberError::Length
        );
    }

    #[test]
    fn debug_of_a_payment_card_hides_number_and_cvc() {
        let card: PaymentCard = serde_json::from_str(
            r#"{"card_number":"5555555555554444","expiry":"12/30","cvc":"123"}"#,
        )
        .unwrap();
        let shown = format!("{card:?}");
        assert!(!shown.contains("5555555555554444"), "{shown}");
        assert!(!shown.contains("123\""), "{shown}");
        assert_eq!(card.card_number.masked().brand, "mastercard");
    }
}
