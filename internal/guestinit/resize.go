package guestinit

import (
	"encoding/binary"
	"fmt"
)

// Ext4 superblock layout (fs/ext4/ext4.h): the superblock starts 1024 bytes
// into the device; offsets below are relative to that.
const (
	SuperblockOffset = 1024
	SuperblockSize   = 1024

	sbBlocksCountLo   = 0x04
	sbLogBlockSize    = 0x18
	sbMagic           = 0x38
	sbFeatureIncompat = 0x60
	sbBlocksCountHi   = 0x150

	ext4Magic          = 0xEF53
	incompat64Bit      = 0x80
	maxBlocks32        = 1<<32 - 1
	maxLogBlockSize    = 6 // 64 KiB, the largest block size ext4 knows
	minSuperblockBytes = sbBlocksCountHi + 4
)

// Superblock holds what growing a filesystem needs from its superblock.
type Superblock struct {
	BlockSize uint64 // bytes
	Blocks    uint64 // total blocks, as the superblock counts them
	Is64Bit   bool   // without the 64bit feature the count stops at 2^32-1
}

// ParseSuperblock decodes the ext4 superblock in b, which holds the bytes
// that start SuperblockOffset bytes into the device.
func ParseSuperblock(b []byte) (Superblock, error) {
	if len(b) < minSuperblockBytes {
		return Superblock{}, fmt.Errorf("superblock: %d bytes, want at least %d", len(b), minSuperblockBytes)
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[sbMagic:]); m != ext4Magic {
		return Superblock{}, fmt.Errorf("superblock: magic %#x, not ext2/3/4", m)
	}
	logSize := le.Uint32(b[sbLogBlockSize:])
	if logSize > maxLogBlockSize {
		return Superblock{}, fmt.Errorf("superblock: block size 2^(10+%d) is not valid", logSize)
	}
	sb := Superblock{
		BlockSize: 1024 << logSize,
		Blocks:    uint64(le.Uint32(b[sbBlocksCountLo:])),
		Is64Bit:   le.Uint32(b[sbFeatureIncompat:])&incompat64Bit != 0,
	}
	if sb.Is64Bit {
		sb.Blocks |= uint64(le.Uint32(b[sbBlocksCountHi:])) << 32
	}
	return sb, nil
}

// GrowTarget returns the block count that fills a device of deviceBytes, and
// whether that is more than the filesystem has now. A device smaller than the
// filesystem (never expected) is not a reason to shrink: it reports false.
func GrowTarget(sb Superblock, deviceBytes uint64) (blocks uint64, grow bool) {
	if sb.BlockSize == 0 {
		return sb.Blocks, false
	}
	target := deviceBytes / sb.BlockSize
	if !sb.Is64Bit && target > maxBlocks32 {
		target = maxBlocks32
	}
	return target, target > sb.Blocks
}
