package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium returns Debian's chromium, which .ci/run installs.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed (.ci/run installs Debian's chromium): the status page is tested in a real browser")
	return ""
}

// TestStatusPageInABrowser loads the admin listener's status page in a
// real headless Chromium against a real baton with two services and a
// token: the page asks for the token, then shows each service with its
// live colour and versions; a deploy made meanwhile shows on the page,
// through its stream, without the page being reloaded. A screenshot is
// written (BATON_UPDATE_SCREENSHOT=1 writes docs/img/status-page.png).
func TestStatusPageInABrowser(t *testing.T) {
	exe := chromium(t)
	svcs := newServices(t)[:2] // shop and api
	svcs[0].host = ""          // shop takes every other host, so that a probe can reach it by address
	file := filepath.Join(t.TempDir(), "baton.yaml")
	writeServicesFile(t, file, svcs)
	b := newBaton(t, "--config", file)
	b.start()
	for _, s := range svcs {
		b.deployService(s, s.name+"-v1")
	}
	if t.Failed() {
		t.FailNow()
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1100, 700))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()

	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(css(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	eval := func(js string) any {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[any](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}

	// The first run starts the browser: no timeout on it (it would stop
	// the browser); the test's own timeout bounds it.
	if err := chromedp.Do(ctx, chromedp.Navigate("http://"+b.admin+"/")); err != nil {
		t.Fatalf("open the status page: %v", err)
	}
	step := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			html, _ := chromedp.Run(ctx, chromedp.OuterHTML(css("body")))
			t.Fatalf("%s: %v\npage:\n%s\nbaton log:\n%s", what, err, html, b.proc.out.String())
		}
	}
	step("the page asks for the token", chromedp.WaitVisible(css("#login")))
	step("give the token", chromedp.SendKeys(css("#token"), b.token), chromedp.Click(css("#login button")))
	step("the page shows both services", chromedp.WaitVisible(css(`section[data-service="shop"] tbody tr`)),
		chromedp.WaitVisible(css(`section[data-service="api"] tbody tr`)))
	eval(`window.notReloaded = true`)
	for _, name := range []string{"shop", "api"} {
		card := text(`section[data-service="` + name + `"]`)
		where := name + ".example.com"
		if name == "shop" {
			where = "every host"
		}
		for _, want := range []string{"live: green", name + "-v1", "healthy", where, "last: deploy " + name + "-v1"} {
			if !strings.Contains(card, want) {
				t.Errorf("the page's %s card lacks %q:\n%s", name, want, card)
			}
		}
	}
	if stored := eval(`sessionStorage.getItem("baton-admin-token") || ""`); stored != b.token {
		t.Errorf("the token is not kept in the tab's sessionStorage (%q)", stored)
	}

	// A deploy of shop while the page is open: the page shows it without
	// a reload, and api's card is unchanged.
	b.deployService(svcs[0], "shop-v2")
	pctx, cancelPoll := context.WithTimeout(ctx, 20*time.Second)
	defer cancelPoll()
	_, err := chromedp.Run(pctx, chromedp.Poll[bool](`(() => { const s = document.querySelector('section[data-service="shop"]');
		return !!s && s.textContent.includes("live: blue") && s.textContent.includes("last: deploy shop-v2"); })()`))
	if err != nil {
		t.Fatalf("the page did not show shop's deploy of v2: %v\n%s", err, text(`section[data-service="shop"]`))
	}
	if live := text(`section[data-service="shop"] [data-live]`); live != "live: blue" || eval(`window.notReloaded === true`) != true {
		t.Errorf("after the deploy: shop %q, page kept %v; want live: blue on the same page", live, eval(`window.notReloaded === true`))
	}
	if recent := text(`section[data-service="shop"] table.recent`); !strings.Contains(recent, "shop-v2") || !strings.Contains(recent, "shop-v1") {
		t.Errorf("shop's recent deploys on the page lack v1 or v2:\n%s", recent)
	}
	if api := text(`section[data-service="api"]`); !strings.Contains(api, "live: green") || !strings.Contains(api, "api-v1") {
		t.Errorf("api's card changed with shop's deploy:\n%s", api)
	}

	// A probed deploy: the CLI hands the probe's verdict and timeline plot
	// to baton, and the page shows them.
	if _, _, out, code := b.deploy("--service", "shop", "--artifact", appBin, "--version", "shop-v3",
		"--probe", "http://"+b.http+"/", "--probe-rate", "100"); code != 0 || strings.Contains(out, "could not be shown") {
		t.Fatalf("probed deploy exited %d:\n%s", code, out)
	}
	pctx2, cancelPoll2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancelPoll2()
	if _, err := chromedp.Run(pctx2, chromedp.Poll[bool](`(() => { const p = document.querySelector('section[data-service="shop"] .probe');
		const img = p && p.querySelector("img.plot");
		return !!img && img.complete && img.naturalWidth > 0 && p.textContent.includes("PASS"); })()`)); err != nil {
		t.Fatalf("the page does not show the probe's verdict and plot: %v\n%s", err, text(`section[data-service="shop"]`))
	}

	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(t.TempDir(), "status-page.png")
	if os.Getenv("BATON_UPDATE_SCREENSHOT") == "1" {
		shot = "../docs/img/status-page.png"
	}
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	// What a phone shows: the cards fit a narrow screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(380, 800)); err != nil {
		t.Fatal(err)
	}
	if w := eval(`Math.round(document.querySelector('section[data-service="shop"]').getBoundingClientRect().right)`); w.(float64) > 380 {
		t.Errorf("on a 380-pixel-wide screen a card ends at %v; want it to fit", w)
	}
}
