//! AES-GCM, AES-CBC and AES key wrap on raw keys.

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

/// AES-CBC with PKCS#7 padding (`pad`) or without (the data must then be whole blocks).
pub fn cbc_seal(
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
    pad: bool,
) -> Result<Vec<u8>, CryptoError> {
    if iv.len() != 16 {
        return Err(bad("The iv for AES-CBC must be 16 bytes."));
    }
    if !pad && !plaintext.len().is_multiple_of(16) {
        return Err(bad(
            "AES-CBC without padding needs data in multiples of 16 bytes.",
        ));
    }
    match key.len() {
        16 => Ok(cbc_encrypt::<aes::Aes128>(key, iv, plaintext, pad)),
        24 => Ok(cbc_encrypt::<aes::Aes192>(key, iv, plaintext, pad)),
        32 => Ok(cbc_encrypt::<aes::Aes256>(key, iv, plaintext, pad)),
        _ => Err(bad("bad AES key length")),
    }
}

pub fn cbc_open(key: &[u8], iv: &[u8], cipher: &[u8], pad: bool) -> Result<Vec<u8>, CryptoError> {
    if iv.len() != 16 {
        return Err(bad("The iv for AES-CBC must be 16 bytes."));
    }
    let r = match key.len() {
        16 => cbc_decrypt::<aes::Aes128>(key, iv, cipher, pad),
        24 => cbc_decrypt::<aes::Aes192>(key, iv, cipher, pad),
        32 => cbc_decrypt::<aes::Aes256>(key, iv, cipher, pad),
        _ => return Err(bad("bad AES key length")),
    };
    r.ok_or_else(|| bad("AES-CBC decryption failed: the data or its padding is not valid."))
}

fn cbc_encrypt<C>(key: &[u8], iv: &[u8], plaintext: &[u8], pad: bool) -> Vec<u8>
where
    C: cbc::cipher::BlockCipherEncrypt + cbc::cipher::KeyInit,
{
    use cbc::cipher::block_padding::{NoPadding, Pkcs7};
    use cbc::cipher::{BlockModeEncrypt, KeyIvInit};
    let e = cbc::Encryptor::<C>::new_from_slices(key, iv).expect("key and iv sizes checked");
    if pad {
        e.encrypt_padded_vec::<Pkcs7>(plaintext)
    } else {
        e.encrypt_padded_vec::<NoPadding>(plaintext)
    }
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], cipher: &[u8], pad: bool) -> Option<Vec<u8>>
where
    C: cbc::cipher::BlockCipherDecrypt + cbc::cipher::KeyInit,
{
    use cbc::cipher::block_padding::{NoPadding, Pkcs7};
    use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
    let d = cbc::Decryptor::<C>::new_from_slices(key, iv).expect("key and iv sizes checked");
    if pad {
        d.decrypt_padded_vec::<Pkcs7>(cipher).ok()
    } else {
        d.decrypt_padded_vec::<NoPadding>(cipher).ok()
    }
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
