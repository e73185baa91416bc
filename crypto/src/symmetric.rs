//! AES-GCM and AES key wrap on raw keys.

use super::*;

pub fn gcm_seal(
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = Nonce::try_from(iv).map_err(|_| bad("bad nonce"))?;
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let r = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        24 => Aes192Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        32 => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        _ => return Err(bad("bad AES key length")),
    };
    r.map_err(|_| bad("AES-GCM encryption failed"))
}

pub fn gcm_open(key: &[u8], iv: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = Nonce::try_from(iv).map_err(|_| bad("bad nonce"))?;
    let payload = Payload { msg: sealed, aad };
    let r = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        24 => Aes192Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        32 => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        _ => return Err(bad("bad AES key length")),
    };
    r.map_err(|_| bad("AES-GCM authentication failed"))
}

/// Dispatches an AES-KW/KWP call on the KEK size. A macro because the six cipher types share
/// no trait that exposes `wrap_key`.
macro_rules! macro_kw {
    ($kek:expr, $pad:expr, $op:ident, $input:expr, $buf:expr) => {{
        let kek: &[u8] = $kek;
        let fail = |_| bad("The key unwrap failed: integrity check error.");
        let res: Result<usize, CryptoError> = match (kek.len(), $pad) {
            (16, false) => KwAes128::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (24, false) => KwAes192::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (32, false) => KwAes256::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (16, true) => KwpAes128::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (24, true) => KwpAes192::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (32, true) => KwpAes256::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            _ => Err(bad("bad AES key length")),
        };
        res
    }};
}

/// AES key wrap, RFC 3394 (`pad` false) or RFC 5649 (`pad` true).
pub fn aes_kw_wrap(kek: &[u8], data: &[u8], pad: bool) -> Result<Vec<u8>, CryptoError> {
    if !pad && (data.len() < 16 || !data.len().is_multiple_of(8)) {
        return Err(bad(
            "AES key wrap needs data of at least 16 bytes in multiples of 8; use CKM_AES_KEY_WRAP_PAD.",
        ));
    }
    if data.is_empty() {
        return Err(bad("Nothing to wrap."));
    }
    let mut buf = vec![0u8; data.len().div_ceil(8) * 8 + 8];
    let n = macro_kw!(kek, pad, wrap_key, data, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8], pad: bool) -> Result<Vec<u8>, CryptoError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(bad("The wrapped key has an invalid length."));
    }
    let mut buf = vec![0u8; wrapped.len()];
    let n = macro_kw!(kek, pad, unwrap_key, wrapped, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}
