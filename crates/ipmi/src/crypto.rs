//! RMCP+ cipher suites: the RAKP authentication HMACs, session key derivation, the integrity
//! AuthCode and AES-CBC-128 confidentiality (IPMI 2.0 §13.28–13.29).
//!
//! Pure functions over bytes. `tests/kat/rmcp_vectors.py` computes the same values
//! independently (Python's hmac/hashlib, openssl for AES) and the tests compare.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};

/// The cipher suites the agent speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128.
    Suite3,
    /// RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128.
    Suite17,
}

impl CipherSuite {
    /// From the suite number in the configuration.
    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            3 => Some(CipherSuite::Suite3),
            17 => Some(CipherSuite::Suite17),
            _ => None,
        }
    }

    /// The suite number.
    pub fn id(self) -> u8 {
        match self {
            CipherSuite::Suite3 => 3,
            CipherSuite::Suite17 => 17,
        }
    }

    /// (authentication, integrity, confidentiality) algorithm numbers for Open Session.
    pub fn algorithms(self) -> (u8, u8, u8) {
        match self {
            CipherSuite::Suite3 => (0x01, 0x01, 0x01),
            CipherSuite::Suite17 => (0x03, 0x04, 0x01),
        }
    }

    /// Length of the RAKP key-exchange HMACs (RAKP2, RAKP3) and of SIK, K1, K2.
    pub fn hmac_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 20,
            CipherSuite::Suite17 => 32,
        }
    }

    /// Length of the RAKP4 integrity check value and of each packet's AuthCode.
    pub fn icv_len(self) -> usize {
        match self {
            CipherSuite::Suite3 => 12,
            CipherSuite::Suite17 => 16,
        }
    }

    /// HMAC of `parts` (concatenated) under `key`, full length.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            // HMAC accepts keys of any length.
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
            for p in parts {
                mac.update(p);
            }
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            CipherSuite::Suite3 => run::<Hmac<sha1::Sha1>>(key, parts),
            CipherSuite::Suite17 => run::<Hmac<sha2::Sha256>>(key, parts),
        }
    }
}

/// The user key Kuid: the password, NUL-padded to 20 bytes (IPMI 2.0 passwords are at most 20).
pub fn user_key(password: &[u8]) -> [u8; 20] {
    let mut k = [0u8; 20];
    let n = password.len().min(20);
    k[..n].copy_from_slice(&password[..n]);
    k
}

/// Keys of an established session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Session integrity key.
    pub sik: Vec<u8>,
    /// K1: integrity (AuthCode) key.
    pub k1: Vec<u8>,
    /// K2: confidentiality key material (AES uses its first 16 bytes).
    pub k2: Vec<u8>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)") // never log key material
    }
}

impl SessionKeys {
    /// SIK = HMAC_Kg(Rm | Rc | ROLEm | ULENGTHm | UNAMEm), with Kg = Kuid (no BMC key set);
    /// K1 = HMAC_SIK(0x01 × 20), K2 = HMAC_SIK(0x02 × 20). The constants are 20 bytes for
    /// every suite (IPMI 2.0 §13.32; ipmitool and FreeIPMI agree), SHA-256 ones included.
    pub fn derive(
        suite: CipherSuite,
        kg: &[u8],
        rm: &[u8; 16],
        rc: &[u8; 16],
        role: u8,
        username: &[u8],
    ) -> SessionKeys {
        let sik = suite.hmac(kg, &[rm, rc, &[role, username.len() as u8], username]);
        let k1 = suite.hmac(&sik, &[&[0x01; 20]]);
        let k2 = suite.hmac(&sik, &[&[0x02; 20]]);
        SessionKeys { sik, k1, k2 }
    }

    /// AuthCode of an outgoing or incoming packet (over auth type … next header).
    pub fn auth_code(&self, suite: CipherSuite, data: &[u8]) -> Vec<u8> {
        let mut m = suite.hmac(&self.k1, &[data]);
        m.truncate(suite.icv_len());
        m
    }

    fn aes_key(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k.copy_from_slice(&self.k2[..16]);
        k
    }

    /// Encrypts `plain` with AES-CBC-128 under K2 and `iv`: IV, then the ciphertext of the data
    /// followed by the IPMI confidentiality trailer (pad bytes 1, 2, …, n and the pad length n).
    pub fn encrypt(&self, iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let pad = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = Vec::with_capacity(16 + plain.len() + pad + 1);
        buf.extend_from_slice(&iv);
        buf.extend_from_slice(plain);
        buf.extend((1..=pad as u8).chain([pad as u8]));
        let len = buf.len() - 16;
        cbc::Encryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv.into())
            .encrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf[16..], len)
            .unwrap_or_else(|_| unreachable!("length is a multiple of the block size"));
        buf
    }

    /// Decrypts an encrypted payload (IV then ciphertext) and strips the confidentiality
    /// trailer; `None` when it is malformed.
    pub fn decrypt(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < 32 || payload.len() % 16 != 0 {
            return None;
        }
        let (iv, cipher) = payload.split_at(16);
        let iv: [u8; 16] = iv.try_into().ok()?;
        let mut buf = cipher.to_vec();
        cbc::Decryptor::<aes::Aes128>::new(&self.aes_key().into(), &iv.into())
            .decrypt_padded_mut::<aes::cipher::block_padding::NoPadding>(&mut buf)
            .ok()?;
        let pad = *buf.last()? as usize;
        if pad > 15 || pad + 1 > buf.len() {
            return None;
        }
        buf.truncate(buf.len() - pad - 1);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidentiality_round_trip_and_trailer() {
        let keys = SessionKeys {
            sik: vec![0; 20],
            k1: vec![1; 20],
            k2: (0..20).collect(),
        };
        for len in [0usize, 1, 14, 15, 16, 17, 40] {
            let plain: Vec<u8> = (0..len as u8).collect();
            let enc = keys.encrypt([7; 16], &plain);
            assert_eq!(enc.len() % 16, 0);
            assert_eq!(&enc[..16], &[7; 16]);
            assert_eq!(keys.decrypt(&enc).as_deref(), Some(&plain[..]), "len {len}");
        }
        assert_eq!(keys.decrypt(&[0; 16]), None);
        assert_eq!(keys.decrypt(&[0; 33]), None);
    }

    #[test]
    fn keys_never_print() {
        let keys = SessionKeys {
            sik: vec![9; 20],
            k1: vec![9; 20],
            k2: vec![9; 20],
        };
        assert_eq!(format!("{keys:?}"), "SessionKeys(..)");
    }
}
