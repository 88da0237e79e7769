//! Message framing on a QUIC stream: a 4-byte big-endian length, then the encoded
//! message. Frames longer than [`MAX_FRAME_LEN`] are refused before they are read.

use depfs_proto::limits::MAX_FRAME_LEN;
use depfs_proto::{decode_value, encode_value, DecodeError, Message};

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended.
    #[error("stream: {0}")]
    Stream(String),
    /// The peer announced a frame beyond the limit.
    #[error("frame of {0} bytes exceeds the {MAX_FRAME_LEN}-byte limit")]
    TooLong(usize),
    /// The frame does not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(#[from] DecodeError),
}

/// Encodes `msg` as one frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let body = encode_value(msg);
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// The length announced by a frame header, checked against the limit.
pub fn body_len(header: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    Ok(len)
}

/// Decodes a frame body.
pub fn decode(body: &[u8]) -> Result<Message, FrameError> {
    Ok(decode_value(body)?)
}

/// Reads one frame from a QUIC stream; returns the message and the frame's size.
pub async fn read(recv: &mut quinn::RecvStream) -> Result<(Message, usize), FrameError> {
    let mut header = [0u8; 4];
    recv.read_exact(&mut header)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    let len = body_len(header)?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| FrameError::Stream(e.to_string()))?;
    Ok((decode(&body)?, len + 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use depfs_proto::{NodeName, VersionVector};

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let msg = Message::Hello {
            node: NodeName::new("gw1").unwrap(),
            vv: VersionVector::new(),
            lead: Default::default(),
            certificates: Vec::new(),
        };
        let frame = encode(&msg);
        let len = body_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(decode(&frame[4..4 + len]).unwrap(), msg);
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(FrameError::TooLong(_))
        ));
        assert!(decode(b"\x01\xff\xff\xff").is_err());
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        use rand::{Rng, SeedableRng};
        let seed = 0xf7a3e;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for case in 0..20_000 {
            let header: [u8; 4] = rng.gen();
            let _ = body_len(header);
            let len = rng.gen_range(0..512);
            let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let r = std::panic::catch_unwind(|| decode(&body));
            assert!(
                r.is_ok(),
                "panic on case {case} (seed {seed:#x}): {body:02x?}"
            );
        }
    }
}
