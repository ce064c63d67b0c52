//! Token signatures checked by `ring` (already in the build for rustls),
//! installed as jsonwebtoken's crypto provider. A cold RS256 check costs
//! a fraction of what the pure-Rust fallback takes, which matters when a
//! flood of new or forged tokens arrives. Shadowcat only verifies: signing
//! is refused.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};

/// One algorithm and key.
struct RingVerifier {
    algorithm: Algorithm,
    scheme: Scheme,
    key: DecodingKey,
}

enum Scheme {
    Rsa(&'static ring_sig::RsaParameters),
    Other(&'static dyn VerificationAlgorithm),
}

impl Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), SignatureError> {
        let checked = match (&self.scheme, self.key.kind()) {
            (Scheme::Rsa(params), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
            (Scheme::Rsa(params), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(*params, der).verify(message, signature)
            }
            (Scheme::Other(algorithm), DecodingKeyKind::SecretOrDer(bytes)) => {
                UnparsedPublicKey::new(*algorithm, bytes).verify(message, signature)
            }
            (Scheme::Other(_), DecodingKeyKind::RsaModulusExponent { .. }) => {
                return Err(SignatureError::new());
            }
        };
        checked.map_err(|_| SignatureError::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    use Algorithm::*;
    let scheme = match algorithm {
        RS256 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        RS384 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        RS512 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        PS256 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        PS384 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        PS512 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
        ES256 => Scheme::Other(&ring_sig::ECDSA_P256_SHA256_FIXED),
        ES384 => Scheme::Other(&ring_sig::ECDSA_P384_SHA384_FIXED),
        EdDSA => Scheme::Other(&ring_sig::ED25519),
        // HMAC needs a shared secret, which a resource server never holds.
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    if key.family() != algorithm.family() {
        return Err(ErrorKind::InvalidAlgorithm.into());
    }
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        scheme,
        key: key.clone(),
    }))
}

fn signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::Provider("this provider only verifies".into()).into())
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes ring jsonwebtoken's provider for this process (once; later calls
/// and a provider installed first are fine).
pub fn install() {
    let _ = PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Validation, decode};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::{Map, Value, json};

    use super::*;

    fn token(alg: &str, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let head = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(json!({"sub": "s", "exp": 4_000_000_000u64}).to_string());
        let input = format!("{head}.{body}");
        let signature = URL_SAFE_NO_PAD.encode(sign(input.as_bytes()));
        format!("{input}.{signature}")
    }

    fn verifies(token: &str, key: &DecodingKey, alg: Algorithm) -> bool {
        install();
        let mut validation = Validation::new(alg);
        validation.required_spec_claims.clear();
        decode::<Map<String, Value>>(token, key, &validation).is_ok()
    }

    #[test]
    fn elliptic_curve_and_edwards_signatures_verify_and_nothing_else_does() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let ec_key = DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..]),
        )
        .unwrap();
        let es256 = token("ES256", |m| ec.sign(&rng, m).unwrap().as_ref().to_vec());
        assert!(verifies(&es256, &ec_key, Algorithm::ES256));

        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let ed_key =
            DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())).unwrap();
        let eddsa = token("EdDSA", |m| ed.sign(m).as_ref().to_vec());
        assert!(verifies(&eddsa, &ed_key, Algorithm::EdDSA));

        // Another key, another family, a changed message, HMAC: refused.
        assert!(!verifies(&eddsa, &ec_key, Algorithm::EdDSA));
        assert!(!verifies(&es256, &ed_key, Algorithm::ES256));
        let tampered = es256.replacen(".eyJ", ".eyK", 1);
        assert!(!verifies(&tampered, &ec_key, Algorithm::ES256));
        let secret = DecodingKey::from_secret(point);
        let hs256 = token("HS256", |_| vec![0; 32]);
        assert!(!verifies(&hs256, &secret, Algorithm::HS256));
    }
}
