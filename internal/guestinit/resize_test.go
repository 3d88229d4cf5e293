package guestinit

import (
	"encoding/binary"
	"strings"
	"testing"
)

// superblock builds the bytes of an ext4 superblock with the given fields.
func superblock(magic uint16, logBlockSize, blocksLo, blocksHi uint32, is64 bool) []byte {
	b := make([]byte, SuperblockSize)
	le := binary.LittleEndian
	le.PutUint16(b[sbMagic:], magic)
	le.PutUint32(b[sbLogBlockSize:], logBlockSize)
	le.PutUint32(b[sbBlocksCountLo:], blocksLo)
	le.PutUint32(b[sbBlocksCountHi:], blocksHi)
	if is64 {
		le.PutUint32(b[sbFeatureIncompat:], incompat64Bit|0x2) // 64bit + filetype
	} else {
		le.PutUint32(b[sbFeatureIncompat:], 0x2)
	}
	return b
}

func TestParseSuperblock(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    Superblock
		wantErr bool
	}{
		{"4k blocks 32-bit", superblock(ext4Magic, 2, 102400, 0, false), Superblock{BlockSize: 4096, Blocks: 102400}, false},
		{"hi word ignored without 64bit", superblock(ext4Magic, 2, 5, 7, false), Superblock{BlockSize: 4096, Blocks: 5}, false},
		{"64bit count", superblock(ext4Magic, 2, 1, 2, true), Superblock{BlockSize: 4096, Blocks: 2<<32 | 1, Is64Bit: true}, false},
		{"1k blocks", superblock(ext4Magic, 0, 400, 0, false), Superblock{BlockSize: 1024, Blocks: 400}, false},
		{"bad magic", superblock(0x1234, 2, 1, 0, false), Superblock{}, true},
		{"absurd block size", superblock(ext4Magic, 30, 1, 0, false), Superblock{}, true},
		{"short buffer", make([]byte, 100), Superblock{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSuperblock(tt.in)
			if tt.wantErr {
				if err == nil || !strings.HasPrefix(err.Error(), "superblock: ") {
					t.Fatalf("err = %v, want a superblock error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGrowTarget(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name       string
		sb         Superblock
		devBytes   uint64
		wantBlocks uint64
		wantGrow   bool
	}{
		{"already full", Superblock{BlockSize: 4096, Blocks: 512 * mib / 4096}, 512 * mib, 512 * mib / 4096, false},
		{"bigger disk", Superblock{BlockSize: 4096, Blocks: 512 * mib / 4096, Is64Bit: true}, 5120 * mib, 5120 * mib / 4096, true},
		{"partial trailing block rounds down", Superblock{BlockSize: 4096, Blocks: 100}, 101*4096 + 4095, 101, true},
		{"less than a block more", Superblock{BlockSize: 4096, Blocks: 100}, 100*4096 + 1000, 100, false},
		{"smaller disk never shrinks", Superblock{BlockSize: 4096, Blocks: 1000}, 500 * 4096, 500, false},
		{"32-bit count capped", Superblock{BlockSize: 4096, Blocks: 1 << 20}, 32 << 40, maxBlocks32, true},
		{"64-bit not capped", Superblock{BlockSize: 4096, Blocks: 1 << 20, Is64Bit: true}, 32 << 40, 32 << 40 / 4096, true},
		{"zero block size", Superblock{}, 4096, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, grow := GrowTarget(tt.sb, tt.devBytes)
			if blocks != tt.wantBlocks || grow != tt.wantGrow {
				t.Errorf("GrowTarget = (%d, %v), want (%d, %v)", blocks, grow, tt.wantBlocks, tt.wantGrow)
			}
		})
	}
}
