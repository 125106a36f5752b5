//! Who is calling `/api/v1/**`: a bearer JWT verified here, turned into a
//! [`Caller`] for the handlers to authorize with.
//!
//! * Keys: an HS256 secret (development, tests) and/or public keys (RS256,
//!   ES256) from a PEM file (one or more `PUBLIC KEY` blocks) or a JWKS file.
//!   A token is tried against the keys of its header's `alg` (and its `kid`
//!   when both sides name one); no other algorithm is ever accepted, so an
//!   RS256 key cannot be abused as an HS256 secret.
//! * Claims: `exp` is required, `exp`/`nbf` are checked (60 s leeway); `iss`
//!   and `aud` are required and checked when configured; `sub` is the user.
//! * Scopes: the `scope` claim, space-separated (RFC 9068). `payments:admin`
//!   (back office, order service) may do everything; any other caller may
//!   read and confirm only their own payments.
//!
//! Answers: no or a bad token → 401 `UNAUTHENTICATED` with
//! `WWW-Authenticate: Bearer …` (RFC 6750); a missing scope → 403
//! `INSUFFICIENT_SCOPE` (with `error="insufficient_scope"`). Another user's
//! payment is answered as a missing one (404) by the handlers.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use payment_domain::UserId;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, ProblemCode};

/// The scope that may do everything the API offers.
pub const ADMIN_SCOPE: &str = "payments:admin";

/// The path prefix every authenticated route lives under.
const PROTECTED: &str = "/api/v1";

/// Why the authentication settings are unusable; the service refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("no key to verify tokens with: set auth.hs256_secret (PAYMENT__AUTH__HS256_SECRET) or auth.public_keys_file (PAYMENT__AUTH__PUBLIC_KEYS_FILE), or auth.disabled (PAYMENT__AUTH__DISABLED=true, development only)")]
    NoKey,
    #[error("auth.hs256_secret (PAYMENT__AUTH__HS256_SECRET) must be at least 32 bytes")]
    WeakSecret,
    #[error("auth.public_keys_file {path}: {reason}")]
    PublicKeys { path: String, reason: String },
}

/// One key a token may be verified with.
struct VerifyingKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// What `/api/v1/**` requires of a caller.
#[derive(Clone)]
pub struct Authenticator(Arc<Mode>);

enum Mode {
    /// Every request is an admin (`auth.disabled`, development only).
    Disabled,
    Verify {
        keys: Vec<VerifyingKey>,
        issuer: Option<String>,
        audience: Option<String>,
    },
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Mode::Disabled => f.write_str("Authenticator(disabled)"),
            Mode::Verify {
                keys,
                issuer,
                audience,
            } => f
                .debug_struct("Authenticator")
                .field(
                    "keys",
                    &keys
                        .iter()
                        .map(|k| (k.algorithm, k.kid.as_deref()))
                        .collect::<Vec<_>>(),
                )
                .field("issuer", issuer)
                .field("audience", audience)
                .finish(),
        }
    }
}

/// Where the verifying keys come from.
#[derive(Debug, Default)]
pub struct AuthSettings<'a> {
    pub hs256_secret: Option<&'a [u8]>,
    pub public_keys_file: Option<&'a Path>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Authenticator {
    /// Every caller is an admin. Development only: the caller logs it loudly.
    #[must_use]
    pub fn disabled() -> Self {
        Self(Arc::new(Mode::Disabled))
    }

    /// Verifies tokens with the configured keys.
    ///
    /// # Errors
    /// [`AuthSetupError`] when no key is configured, the secret is short or
    /// the public keys file cannot be read.
    pub fn new(settings: AuthSettings<'_>) -> Result<Self, AuthSetupError> {
        let mut keys = Vec::new();
        if let Some(secret) = settings.hs256_secret {
            if secret.len() < 32 {
                return Err(AuthSetupError::WeakSecret);
            }
            keys.push(VerifyingKey {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            });
        }
        if let Some(path) = settings.public_keys_file {
            let failed = |reason: String| AuthSetupError::PublicKeys {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
            let found = public_keys(&text).map_err(failed)?;
            if found.is_empty() {
                return Err(failed("holds no RS256 or ES256 public key".into()));
            }
            keys.extend(found);
        }
        if keys.is_empty() {
            return Err(AuthSetupError::NoKey);
        }
        Ok(Self(Arc::new(Mode::Verify {
            keys,
            issuer: settings.issuer,
            audience: settings.audience,
        })))
    }

    /// The caller a bearer token names.
    fn verify(&self, token: &str) -> Result<Caller, String> {
        let Mode::Verify {
            keys,
            issuer,
            audience,
        } = &*self.0
        else {
            return Ok(Caller {
                user: UserId::parse("dev").map_err(|e| e.to_string())?,
                admin: true,
            });
        };
        let header = jsonwebtoken::decode_header(token).map_err(|e| e.to_string())?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(
            &[Some("exp"), Some("sub"), issuer.as_ref().map(|_| "iss")]
                .into_iter()
                .chain([audience.as_ref().map(|_| "aud")])
                .flatten()
                .collect::<Vec<_>>(),
        );
        validation.validate_nbf = true;
        match issuer {
            Some(issuer) => validation.set_issuer(&[issuer]),
            None => validation.iss = None,
        }
        match audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let candidates = keys.iter().filter(|k| {
            k.algorithm == header.alg
                && match (&k.kid, &header.kid) {
                    (Some(ours), Some(theirs)) => ours == theirs,
                    _ => true,
                }
        });
        let mut last = "no key for the token's algorithm and key id".to_owned();
        for candidate in candidates {
            match jsonwebtoken::decode::<Verified>(token, &candidate.key, &validation) {
                Ok(data) => return Caller::from_claims(data.claims),
                Err(error) => last = error.to_string(),
            }
        }
        Err(last)
    }
}

/// The public keys of a PEM or JWKS file.
fn public_keys(text: &str) -> Result<Vec<VerifyingKey>, String> {
    if text.trim_start().starts_with('{') {
        let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
        let mut keys = Vec::new();
        for jwk in set
            .keys
            .iter()
            .filter(|k| k.common.public_key_use != Some(PublicKeyUse::Encryption))
        {
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    return Err(format!(
                        "key {:?}: only RS256 and ES256 (P-256) keys are supported",
                        jwk.common.key_id
                    ))
                }
            };
            keys.push(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key: DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?,
            });
        }
        return Ok(keys);
    }
    let blocks = pem::parse_many(text).map_err(|e| format!("not PEM: {e}"))?;
    blocks
        .iter()
        .map(|block| {
            let encoded = pem::encode(block);
            let bytes = encoded.as_bytes();
            DecodingKey::from_rsa_pem(bytes)
                .map(|key| (Algorithm::RS256, key))
                .or_else(|_| DecodingKey::from_ec_pem(bytes).map(|key| (Algorithm::ES256, key)))
                .map(|(algorithm, key)| VerifyingKey {
                    kid: None,
                    algorithm,
                    key,
                })
                .map_err(|e| format!("PEM block {:?}: {e}", block.tag()))
        })
        .collect()
}

/// What the service reads of a verified token. `exp`, `nbf`, `iss` and `aud`
/// are checked by `jsonwebtoken`'s [`Validation`] alone, which reads `aud` as
/// a string or an array of strings (RFC 7519 §4.1.3); other claims are
/// ignored.
#[derive(Debug, Deserialize)]
struct Verified {
    sub: String,
    /// Space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
}

/// The claims of the tokens the service signs itself (the dev token,
/// tests); verification reads tokens more leniently ([`Verified`]).
#[derive(Debug, Serialize)]
pub struct Claims {
    pub sub: String,
    /// Space-separated scopes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Signs `claims` with an HS256 `secret` (the dev token, tests).
///
/// # Errors
/// When the claims cannot be encoded.
pub fn hs256_token(secret: &[u8], claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// The authenticated caller of a `/api/v1/**` route.
#[derive(Debug, Clone)]
pub struct Caller {
    user: UserId,
    admin: bool,
}

impl Caller {
    fn from_claims(claims: Verified) -> Result<Self, String> {
        let user = UserId::parse(claims.sub).map_err(|e| format!("sub: {e}"))?;
        let admin = claims
            .scope
            .as_deref()
            .unwrap_or_default()
            .split(' ')
            .any(|scope| scope == ADMIN_SCOPE);
        Ok(Self { user, admin })
    }

    /// The user whose payments alone this caller may touch; `None` for an
    /// admin, who may touch all.
    #[must_use]
    pub fn owner(&self) -> Option<&UserId> {
        (!self.admin).then_some(&self.user)
    }

    /// May this caller see a payment of `user`?
    #[must_use]
    pub fn may_see(&self, user: &UserId) -> bool {
        self.admin || self.user == *user
    }
}

/// A caller with the [`ADMIN_SCOPE`]; any other caller is answered 403.
#[derive(Debug, Clone)]
pub struct Admin;

fn challenge(mut response: Response, value: String) -> Response {
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// 401 with the RFC 6750 challenge; `error` is set when a token was sent.
fn unauthenticated(error: Option<&str>) -> Response {
    let detail = error.map_or_else(
        || "send a bearer token: Authorization: Bearer <JWT>".to_owned(),
        |reason| format!("the bearer token was refused: {reason}"),
    );
    let mut value = r#"Bearer realm="payment-service""#.to_owned();
    if error.is_some() {
        value.push_str(r#", error="invalid_token""#);
    }
    challenge(
        Problem::new(ProblemCode::Unauthenticated, detail).into_response(),
        value,
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(|| unauthenticated(None))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        if caller.admin {
            return Ok(Self);
        }
        Err(challenge(
            Problem::new(
                ProblemCode::InsufficientScope,
                format!("this needs the {ADMIN_SCOPE} scope"),
            )
            .into_response(),
            format!(
                r#"Bearer realm="payment-service", error="insufficient_scope", scope="{ADMIN_SCOPE}""#
            ),
        ))
    }
}

/// Authenticates every request under `/api/v1`; other routes (widget
/// redirects, the Toss webhook, ops, the document) pass untouched.
pub(crate) async fn authenticate(
    State(auth): State<Authenticator>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let protected = path
        .strip_prefix(PROTECTED)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if !protected {
        return next.run(request).await;
    }
    let token = match (&*auth.0, request.headers().get(header::AUTHORIZATION)) {
        (Mode::Disabled, _) => "",
        (Mode::Verify { .. }, None) => return unauthenticated(None),
        (Mode::Verify { .. }, Some(value)) => match value.to_str().ok().and_then(bearer_token) {
            Some(token) => token,
            None => return unauthenticated(Some("not a Bearer authorization")),
        },
    };
    match auth.verify(token) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(reason) => {
            tracing::info!(%reason, "bearer token refused");
            unauthenticated(Some(&reason))
        }
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn claims(sub: &str, scope: Option<&str>) -> Claims {
        Claims {
            sub: sub.into(),
            scope: scope.map(Into::into),
            exp: now() + 300,
            iss: None,
            aud: None,
        }
    }

    fn hs256(issuer: Option<&str>, audience: Option<&str>) -> Authenticator {
        Authenticator::new(AuthSettings {
            hs256_secret: Some(SECRET),
            issuer: issuer.map(Into::into),
            audience: audience.map(Into::into),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn a_token_of_the_secret_names_its_user_and_scope() {
        let auth = hs256(None, None);
        let user = auth
            .verify(&hs256_token(SECRET, &claims("user-1", Some("openid"))).unwrap())
            .unwrap();
        assert_eq!(user.owner().map(UserId::as_str), Some("user-1"));
        let admin = auth
            .verify(&hs256_token(SECRET, &claims("bo", Some("a payments:admin b"))).unwrap())
            .unwrap();
        assert!(admin.owner().is_none());
        assert!(admin.may_see(&UserId::parse("anyone").unwrap()));
    }

    #[test]
    fn wrong_key_expired_and_future_tokens_are_refused() {
        let auth = hs256(None, None);
        let other = hs256_token(b"another secret of 32 bytes.......", &claims("u", None));
        assert!(auth.verify(&other.unwrap()).is_err());
        let mut expired = claims("u", None);
        expired.exp = now() - 3_600;
        assert!(auth
            .verify(&hs256_token(SECRET, &expired).unwrap())
            .is_err());
        #[derive(Serialize)]
        struct NotYet {
            sub: &'static str,
            exp: u64,
            nbf: u64,
        }
        let not_yet = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NotYet {
                sub: "u",
                exp: now() + 7_200,
                nbf: now() + 3_600,
            },
            &EncodingKey::from_secret(SECRET),
        );
        assert!(auth.verify(&not_yet.unwrap()).is_err());
        assert!(auth.verify("not.a.jwt").is_err());
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let auth = hs256(Some("https://idp"), Some("payment-service"));
        let mut good = claims("u", None);
        good.iss = Some("https://idp".into());
        good.aud = Some("payment-service".into());
        assert!(auth.verify(&hs256_token(SECRET, &good).unwrap()).is_ok());
        let missing = claims("u", None);
        assert!(auth
            .verify(&hs256_token(SECRET, &missing).unwrap())
            .is_err());
        good.aud = Some("someone-else".into());
        assert!(auth.verify(&hs256_token(SECRET, &good).unwrap()).is_err());
    }

    #[test]
    fn an_audience_array_is_accepted_when_it_names_ours() {
        let auth = hs256(Some("https://idp"), Some("payment-service"));
        let token = |aud: serde_json::Value| {
            let claims = serde_json::json!({
                "sub": "u", "exp": now() + 300, "iss": "https://idp", "aud": aud,
            });
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap()
        };
        let caller = auth
            .verify(&token(serde_json::json!(["other", "payment-service"])))
            .unwrap();
        assert_eq!(caller.owner().map(UserId::as_str), Some("u"));
        assert!(auth.verify(&token(serde_json::json!(["other"]))).is_err());
        assert!(auth.verify(&token(serde_json::json!([]))).is_err());
        // Without a configured audience, any `aud` (or none) is fine.
        let open = hs256(None, None);
        assert!(open.verify(&token(serde_json::json!(["other"]))).is_ok());
    }

    #[test]
    fn without_a_key_or_with_a_short_secret_nothing_starts() {
        assert!(matches!(
            Authenticator::new(AuthSettings::default()),
            Err(AuthSetupError::NoKey)
        ));
        assert!(matches!(
            Authenticator::new(AuthSettings {
                hs256_secret: Some(b"short"),
                ..AuthSettings::default()
            }),
            Err(AuthSetupError::WeakSecret)
        ));
    }

    /// A fresh P-256 key pair: its PKCS#8 (to sign) and its uncompressed
    /// public point (to verify).
    fn p256() -> (Vec<u8>, Vec<u8>) {
        use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        (pkcs8.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
    }

    fn es256(pkcs8: &[u8], kid: Option<&str>, sub: &str) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(
            &header,
            &claims(sub, None),
            &EncodingKey::from_ec_der(pkcs8),
        )
        .unwrap()
    }

    fn keys_file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn with_keys(path: &Path) -> Authenticator {
        Authenticator::new(AuthSettings {
            public_keys_file: Some(path),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    #[test]
    fn es256_tokens_verify_with_a_pem_public_key_and_nothing_else_does() {
        let (private, point) = p256();
        // SubjectPublicKeyInfo of an uncompressed P-256 point.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(&point);
        let pem_text = pem::encode(&pem::Pem::new("PUBLIC KEY", spki));
        let path = keys_file("auth-es256.pem", &pem_text);
        let auth = with_keys(&path);
        let caller = auth.verify(&es256(&private, None, "u-es")).unwrap();
        assert_eq!(caller.owner().map(UserId::as_str), Some("u-es"));
        // Another key pair's token, and an HS256 token "signed" with the
        // public key's text (algorithm confusion), are refused.
        let (other, _) = p256();
        assert!(auth.verify(&es256(&other, None, "u-es")).is_err());
        let confused = hs256_token(pem_text.as_bytes(), &claims("u-es", Some(ADMIN_SCOPE)));
        assert!(auth.verify(&confused.unwrap()).is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_jwks_file_is_read_and_the_kid_picks_the_key() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (first, first_point) = p256();
        let (second, second_point) = p256();
        let jwk = |kid: &str, point: &[u8]| {
            serde_json::json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
            })
        };
        let set = serde_json::json!({ "keys": [
            jwk("k1", &first_point),
            jwk("k2", &second_point),
            { "kty": "RSA", "use": "enc", "kid": "e1", "n": "AQAB", "e": "AQAB" },
        ]});
        let path = keys_file("auth-keys.jwks", &set.to_string());
        let auth = with_keys(&path);
        assert!(auth.verify(&es256(&first, Some("k1"), "u1")).is_ok());
        assert!(auth.verify(&es256(&second, Some("k2"), "u2")).is_ok());
        assert!(auth.verify(&es256(&second, None, "u2")).is_ok());
        assert!(auth.verify(&es256(&first, Some("k2"), "u1")).is_err());
        std::fs::remove_file(path).unwrap();
    }

    /// A fresh 2048-bit RSA key pair: its PKCS#1 DER (to sign) and its
    /// public key. `ring` cannot generate RSA keys; `rsa` (already in the
    /// dependency graph, through sqlx's MySQL driver) can.
    fn rsa_pair() -> (Vec<u8>, rsa::RsaPublicKey) {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        let private = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let der = private.to_pkcs1_der().unwrap().as_bytes().to_vec();
        (der, private.to_public_key())
    }

    fn rs256(der: &[u8], kid: Option<&str>, sub: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(Into::into);
        jsonwebtoken::encode(&header, &claims(sub, None), &EncodingKey::from_rsa_der(der)).unwrap()
    }

    #[test]
    fn rs256_tokens_verify_with_a_pem_public_key_or_a_jwks_and_nothing_else_does() {
        use base64::Engine as _;
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        use rsa::traits::PublicKeyParts as _;
        // One key pair (generating one takes seconds in a debug build); a
        // token carrying another token's signature stands for a wrong key.
        let (private, public) = rsa_pair();
        let forged = {
            let token = rs256(&private, None, "u-rs");
            let other = rs256(&private, None, "admin");
            let (body, _) = token.rsplit_once('.').unwrap();
            let (_, signature) = other.rsplit_once('.').unwrap();
            format!("{body}.{signature}")
        };

        // PEM: a SubjectPublicKeyInfo (`PUBLIC KEY`) and a PKCS#1 (`RSA
        // PUBLIC KEY`) block each verify.
        for (name, pem_text) in [
            (
                "auth-rs256-spki.pem",
                public.to_public_key_pem(LineEnding::LF).unwrap(),
            ),
            (
                "auth-rs256-pkcs1.pem",
                public.to_pkcs1_pem(LineEnding::LF).unwrap(),
            ),
        ] {
            let path = keys_file(name, &pem_text);
            let auth = with_keys(&path);
            let caller = auth.verify(&rs256(&private, None, "u-rs")).unwrap();
            assert_eq!(caller.owner().map(UserId::as_str), Some("u-rs"));
            // A forged signature, an ES256 token, and an HS256 token
            // "signed" with the public key's text are refused.
            assert!(auth.verify(&forged).is_err());
            assert!(auth.verify(&es256(&p256().0, None, "u-rs")).is_err());
            let confused = hs256_token(pem_text.as_bytes(), &claims("u-rs", Some(ADMIN_SCOPE)));
            assert!(auth.verify(&confused.unwrap()).is_err());
            std::fs::remove_file(path).unwrap();
        }

        // JWKS: the key by its modulus and exponent; the kid picks it.
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let set = serde_json::json!({ "keys": [{
            "kty": "RSA", "kid": "r1", "use": "sig", "alg": "RS256",
            "n": b64.encode(public.n().to_bytes_be()),
            "e": b64.encode(public.e().to_bytes_be()),
        }]});
        let path = keys_file("auth-rs256.jwks", &set.to_string());
        let auth = with_keys(&path);
        assert!(auth.verify(&rs256(&private, Some("r1"), "u-rs")).is_ok());
        assert!(auth.verify(&rs256(&private, None, "u-rs")).is_ok());
        assert!(auth.verify(&rs256(&private, Some("r2"), "u-rs")).is_err());
        assert!(auth.verify(&forged).is_err());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bearer_scheme_is_read_case_insensitively() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
