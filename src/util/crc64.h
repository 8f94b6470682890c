// CRC-64/NVME: the checksum Blob Storage verifies a request body against when the request
// carries x-ms-content-crc64 (reflected polynomial 0x9A6C9329AC4BC9B5, initial value and final
// XOR all ones, the result sent as its 8 bytes little-endian in base64).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace nbu {

// Chained like zlib's crc32: start from 0 and pass each result back in, so
// Crc64(Crc64(0, a), b) is the CRC of a followed by b. Folds 64 bytes at a time with carry-less
// multiplication (PCLMULQDQ) where the CPU has it, else eight table lookups per 8 bytes.
uint64_t Crc64(uint64_t crc, const void* data, size_t len);
// The tables alone; and whether Crc64 folds with PCLMULQDQ here. For tests and benchmarks.
uint64_t Crc64Portable(uint64_t crc, const void* data, size_t len);
bool Crc64UsesClmul();
// The x-ms-content-crc64 header value of a CRC.
std::string Crc64Base64(uint64_t crc);

}  // namespace nbu
