//! HLS AES-128 (full-segment AES-128-CBC with PKCS#7 padding), with the RustCrypto crates.

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};

type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// Decrypts `data` in place and returns the plaintext length.
pub fn decrypt_segment(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> Result<usize, String> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(format!(
            "ciphertext length {} is not a positive multiple of 16",
            data.len()
        ));
    }
    Aes128CbcDec::new(key.into(), iv.into())
        .decrypt_padded_mut::<Pkcs7>(data)
        .map(|plain| plain.len())
        .map_err(|_| "bad PKCS#7 padding (wrong key or IV?)".to_string())
}

/// Checks a fetched key body: AES-128 keys are exactly 16 bytes.
pub fn key_from_bytes(body: &[u8]) -> Result<[u8; 16], String> {
    body.try_into()
        .map_err(|_| format!("an AES-128 key is 16 bytes, got {}", body.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::BlockEncryptMut;

    #[test]
    fn round_trip_and_padding_errors() {
        let key = [7u8; 16];
        let iv = 42u128.to_be_bytes();
        let plain: Vec<u8> = (0..100u8).collect();
        let mut buf = vec![0u8; 112];
        buf[..100].copy_from_slice(&plain);
        let enc = cbc::Encryptor::<aes::Aes128>::new((&key).into(), (&iv).into());
        let len = enc
            .encrypt_padded_mut::<Pkcs7>(&mut buf, 100)
            .unwrap()
            .len();
        assert_eq!(len, 112);

        let mut cipher = buf.clone();
        assert_eq!(decrypt_segment(&key, &iv, &mut cipher), Ok(100));
        assert_eq!(&cipher[..100], &plain[..]);

        let mut wrong = buf.clone();
        assert!(decrypt_segment(&[8u8; 16], &iv, &mut wrong).is_err());
        assert!(decrypt_segment(&key, &iv, &mut buf[..50]).is_err());
        assert!(key_from_bytes(&[0u8; 15]).is_err());
    }
}
