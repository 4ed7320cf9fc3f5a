package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/rik-org/rik/internal/testutil"
)

func TestSessionLeaderNotForAChild(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "sleep 30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if SessionLeader(cmd.Process.Pid) {
		t.Errorf("SessionLeader(%d) = true for a child in the test's session", cmd.Process.Pid)
	}
}

func TestParseCPUInfoKHz(t *testing.T) {
	for in, want := range map[string]int{
		"processor\t: 0\ncpu MHz\t\t: 2600.000\n": 2600000,
		"cpu MHz : 1999.998\n":                    1999998,
		"processor : 0\n":                         0,
		"cpu MHz : fast\n":                        0,
	} {
		if got := parseCPUInfoKHz(in); got != want {
			t.Errorf("parseCPUInfoKHz(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestHasVirtFlag(t *testing.T) {
	for in, want := range map[string]bool{
		"flags\t\t: fpu vme de pse vmx sse":   true,
		"flags : fpu svm":                     true,
		"flags : fpu vme hypervisor":          false,
		"processor : 0\nmodel name : x vmx\n": false,
	} {
		if got := HasVirtFlag(in); got != want {
			t.Errorf("HasVirtFlag(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestProcessLifecycle(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "out.log")
	// The shell stays (no exec), so its command line keeps the marker.
	p, err := StartDetached(Launch{Argv: []string{"/bin/sh", "-c", `trap "exit 0" TERM; echo started; while :; do sleep 0.1; done`, "marker-xyz"}, LogPath: log})
	if err != nil {
		t.Fatal(err)
	}
	if !Alive(p) {
		t.Fatal("process not alive after start")
	}
	// Right after a vfork-style exec the kernel may not have set the new
	// command line up yet (/proc/<pid>/cmdline reads empty for a moment).
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid)); len(b) > 0 {
			break
		}
	}
	if !CmdlineContains(p.Pid, "marker-xyz") || CmdlineContains(p.Pid, "not-there") {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.Pid))
		t.Errorf("CmdlineContains wrong: pid %d cmdline %q", p.Pid, b)
	}
	if sid, _ := syscall.Getpgid(p.Pid); sid != p.Pid {
		t.Errorf("process group %d, want its own (%d): not detached", sid, p.Pid)
	}
	if !SessionLeader(p.Pid) {
		t.Errorf("SessionLeader(%d) = false for a detached process", p.Pid)
	}
	if Alive(Process{Pid: p.Pid, StartTime: p.StartTime + 1}) {
		t.Errorf("Alive ignores start time (pid reuse)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if err := Watch(ctx, p); err == nil {
		t.Errorf("Watch returned before exit")
	}
	cancel()
	if err := Signal(p, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if !WaitGone(context.Background(), p, 5*time.Second) {
		t.Fatal("process did not exit after SIGTERM")
	}
	if Alive(p) {
		t.Errorf("Alive after exit")
	}
	if err := Signal(p, syscall.SIGTERM); err != ErrNoProcess {
		t.Errorf("Signal after exit = %v, want ErrNoProcess", err)
	}
	if b, _ := os.ReadFile(log); !bytes.Contains(b, []byte("started")) {
		t.Errorf("log = %q", b)
	}
	if _, err := StartDetached(Launch{Argv: []string{"/nonexistent/vmm"}, LogPath: log}); err == nil {
		t.Errorf("starting a missing binary succeeded")
	}
}

// fakeBzImage wraps payload like an x86 bzImage (setup header fields only).
func fakeBzImage(payload []byte) []byte {
	const setupSects = 3
	b := make([]byte, (setupSects+1)*512+64+len(payload))
	b[0x1f1] = setupSects
	copy(b[0x202:], "HdrS")
	binary.LittleEndian.PutUint32(b[0x248:], 64) // payload_offset
	binary.LittleEndian.PutUint32(b[0x24c:], uint32(len(payload)))
	copy(b[(setupSects+1)*512+64:], payload)
	return b
}

func TestExtractVMLinux(t *testing.T) {
	elfData := append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel"), 1000)...)
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(elfData, nil)
	z = binary.LittleEndian.AppendUint32(z, uint32(len(elfData))) // size appended, as kbuild does
	got, err := ExtractVMLinux(context.Background(), fakeBzImage(z))
	if err != nil || !bytes.Equal(got, elfData) {
		t.Fatalf("ExtractVMLinux(zstd) = %d bytes, %v", len(got), err)
	}
	if _, err := ExtractVMLinux(context.Background(), []byte("not a kernel")); err == nil {
		t.Errorf("garbage accepted")
	}
	if _, err := ExtractVMLinux(context.Background(), fakeBzImage([]byte("unknown-compression"))); err == nil {
		t.Errorf("unknown compression accepted")
	}
	if HasPVHNote(elfData) {
		t.Errorf("HasPVHNote on a truncated ELF")
	}
}

// TestHasPVHNoteMalformed: a note header claiming more bytes than the file
// holds is not a note (and must not make HasPVHNote allocate it: that
// panicked on a huge size).
func TestHasPVHNoteMalformed(t *testing.T) {
	for _, size := range []uint64{1 << 62, 1 << 40, 4096} {
		b := make([]byte, 64+56)
		copy(b, "\x7fELF")
		b[4], b[5], b[6] = 2, 1, 1                     // 64-bit, little endian, version 1
		binary.LittleEndian.PutUint16(b[16:], 2)       // ET_EXEC
		binary.LittleEndian.PutUint16(b[18:], 62)      // x86-64
		binary.LittleEndian.PutUint32(b[20:], 1)       // version
		binary.LittleEndian.PutUint64(b[32:], 64)      // program headers offset
		binary.LittleEndian.PutUint16(b[52:], 64)      // ELF header size
		binary.LittleEndian.PutUint16(b[54:], 56)      // program header size
		binary.LittleEndian.PutUint16(b[56:], 1)       // one program header
		binary.LittleEndian.PutUint32(b[64:], 4)       // PT_NOTE
		binary.LittleEndian.PutUint64(b[64+32:], size) // p_filesz
		if HasPVHNote(b) {
			t.Errorf("HasPVHNote with a note of %d bytes in a %d-byte file = true", size, len(b))
		}
	}
}

// TestPrepareRealKernel uses the Debian kernel of RIK_TEST_KERNEL_DIR.
func TestPrepareRealKernel(t *testing.T) {
	dir := os.Getenv("RIK_TEST_KERNEL_DIR")
	if dir == "" {
		testutil.Unavailable(t, "RIK_TEST_KERNEL_DIR is not set: run test/kernel/fetch.sh /var/cache/rik-test/kernel and export RIK_TEST_KERNEL_DIR")
	}
	ks, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(ks) == 0 {
		t.Fatalf("no boot/vmlinuz-* in %s", dir)
	}
	cache := t.TempDir()
	k, pvh, err := PrepareKernel(context.Background(), ks[0], cache)
	if err != nil || !pvh || filepath.Dir(k) != cache {
		t.Fatalf("PrepareKernel = %q, %v, %v; want a PVH vmlinux in %s", k, pvh, err, cache)
	}
	b, _ := os.ReadFile(k)
	if !HasPVHNote(b) {
		t.Errorf("extracted vmlinux lacks the PVH note")
	}
	k2, _, err := PrepareKernel(context.Background(), ks[0], cache)
	if err != nil || k2 != k {
		t.Errorf("second PrepareKernel = %q, %v; want cached %q", k2, err, k)
	}
}

func BenchmarkExtractVMLinux(b *testing.B) {
	dir := os.Getenv("RIK_TEST_KERNEL_DIR")
	ks, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(ks) == 0 {
		b.Skip("RIK_TEST_KERNEL_DIR not set")
	}
	raw, _ := os.ReadFile(ks[0])
	for b.Loop() {
		if _, err := ExtractVMLinux(context.Background(), raw); err != nil {
			b.Fatal(err)
		}
	}
}
