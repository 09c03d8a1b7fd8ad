using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Cli.Serve;
using IlgpuSae.Study.Dashboards;
using IlgpuSae.Tests.Infrastructure;
using Microsoft.Playwright;
using Xunit;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>
/// The pages in a real browser: Debian's headless Chromium (/usr/bin/chromium) driven by Playwright, with
/// no browser download and no network. Skips when Chromium is absent, except that with
/// <c>ILGPUSAE_EXPECT_BROWSER=1</c> (set by CI inside its chroot) a missing Chromium fails. With
/// <c>ILGPUSAE_SCREENSHOTS=DIR</c> the screenshots are also written to DIR (docs/ keeps two of them).
/// </summary>
public sealed class BrowserTests(StudyFixture study) : IClassFixture<StudyFixture>, IDisposable
{
    private const string Chromium = "/usr/bin/chromium";
    private readonly TempFolder _temp = new("ilgpusae-browser-");

    public void Dispose() => _temp.Dispose();

    private async Task<IBrowserContext> Launch(IPlaywright playwright)
    {
        bool present = File.Exists(Chromium);
        if (!present && Environment.GetEnvironmentVariable("ILGPUSAE_EXPECT_BROWSER") == "1")
        {
            throw new InvalidOperationException(
                $"ILGPUSAE_EXPECT_BROWSER=1 but {Chromium} does not exist: the browser tests cannot run."
            );
        }

        Skip.IfNot(present, $"{Chromium} is absent (apt-get install chromium)");
        return await playwright.Chromium.LaunchPersistentContextAsync(
            _temp.Path("profile-" + Guid.NewGuid().ToString("N")),
            new BrowserTypeLaunchPersistentContextOptions
            {
                ExecutablePath = Chromium,
                Headless = true,
                ChromiumSandbox = false,
                Args =
                [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
                ViewportSize = new ViewportSize { Width = 1280, Height = 1000 },
            }
        );
    }

    private async Task Screenshot(IPage page, string name)
    {
        var path = _temp.Path(name);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = path, FullPage = false });
        new FileInfo(path).Length.Should().BeGreaterThan(10_000, "a screenshot of a drawn page");
        if (Environment.GetEnvironmentVariable("ILGPUSAE_SCREENSHOTS") is { Length: > 0 } dir)
        {
            Directory.CreateDirectory(dir);
            File.Copy(path, Path.Combine(dir, name), overwrite: true);
        }
    }

    [SkippableFact]
    public async Task Index_and_feature_pages_open_offline_sort_search_and_shade_tokens()
    {
        using var playwright = await Playwright.CreateAsync();
        await using var context = await Launch(playwright);
        var page = await context.NewPageAsync();
        var errors = new List<string>();
        page.PageError += (_, e) => errors.Add(e);

        // The dashboards the study was sampled from, opened from file:// with no server.
        var site = Path.Combine(study.Folder, "work", "sae-0");
        await page.GotoAsync(new Uri(Path.Combine(site, "index.html")).AbsoluteUri);
        var rows = page.Locator("#index-table tbody tr");
        (await rows.CountAsync()).Should().Be(160);
        var densities = await page.Locator("#index-table tbody tr td:nth-child(2)").AllInnerTextsAsync();
        densities
            .Select(d => double.Parse(d.TrimEnd('%'), System.Globalization.CultureInfo.InvariantCulture))
            .Should()
            .BeInDescendingOrder("the index opens sorted by density");
        await page.ClickAsync("th[data-key=max_act]");
        var maxes = (await page.Locator("#index-table tbody tr td:nth-child(3)").AllInnerTextsAsync())
            .Select(d => double.Parse(d, System.Globalization.CultureInfo.InvariantCulture))
            .ToList();
        maxes.Should().BeInDescendingOrder();
        await page.ClickAsync("th[data-key=max_act]");
        (await page.Locator("#index-table tbody tr td:nth-child(3)").AllInnerTextsAsync())
            .Select(d => double.Parse(d, System.Globalization.CultureInfo.InvariantCulture))
            .Should()
            .BeInAscendingOrder("a second click reverses the order");
        await page.FillAsync("#search", "17");
        (await page.Locator("#index-table tbody tr[data-id='17']").CountAsync()).Should().Be(1);
        (await page.InnerTextAsync("#count")).Should().EndWith("of 160 features");

        await page.ClickAsync("#index-table tbody tr[data-id='17'] a");
        await page.WaitForSelectorAsync("#feature-title");
        (await page.InnerTextAsync("#feature-title")).Should().Be("Feature 17");
        (await page.Locator("#top-examples .example").CountAsync()).Should().Be(20);
        (await page.Locator("#top-examples .tok.max").CountAsync())
            .Should()
            .Be(20, "each example marks its token");
        var shade = await page.EvalOnSelectorAsync<string>(
            "#top-examples .tok.max",
            "e => getComputedStyle(e).backgroundColor"
        );
        shade.Should().StartWith("rgba(232, 89, 12", "tokens are shaded by activation");
        (await page.Locator("svg.hist").CountAsync()).Should().Be(2, "activation and logit histograms");
        (await page.Locator("svg.hist rect").CountAsync()).Should().Be(100);
        await Screenshot(page, "dashboard-feature.png");
        await page.GotoAsync(new Uri(Path.Combine(site, "feature.html")).AbsoluteUri + "?id=9999");
        await page.WaitForSelectorAsync("#error");
        (await page.InnerTextAsync("#error")).Should().Contain("not in these dashboards");
        errors.Should().BeEmpty();
    }

    [SkippableFact]
    public async Task Five_ratings_by_clicks_and_keys_survive_a_server_restart_and_the_page_resumes()
    {
        var dir = study.CopyTo(_temp.Path("study"));
        var ids = study.Ids;
        using var playwright = await Playwright.CreateAsync();
        await using var context = await Launch(playwright);
        var server = await RatingServer.StartAsync(dir, 0);
        int port = server.Address.Port;
        try
        {
            var page = await context.NewPageAsync();
            await page.GotoAsync(server.Address + "rate.html");
            await page.FillAsync("#rater", "tester");
            await page.PressAsync("#rater", "Tab");
            await page.WaitForFunctionAsync(
                $"location.hash === '#{ids[0]}' && !!document.getElementById('feature-title')"
            );
            (await page.InnerTextAsync("#progress")).Should().Be($"0 of {ids.Count} rated");

            async Task Rate(Func<Task> act, string nextId, string label)
            {
                await act();
                await page.WaitForFunctionAsync($"location.hash === '#{nextId}'");
                (await page.InnerTextAsync("#status")).Should().StartWith($"Saved: {label}");
            }

            await Rate(() => page.ClickAsync("#btn-yes"), ids[1], "yes");
            await page.FillAsync("#description", "numbers in dates");
            await page.Locator("body")
                .ClickAsync(
                    new LocatorClickOptions
                    {
                        Position = new Position { X = 5, Y = 300 },
                    }
                );
            await Rate(() => page.Keyboard.PressAsync("m"), ids[2], "maybe");
            await Screenshot(page, "rating-page.png");

            // The server stops between ratings: a rating made now is reported as not saved.
            await server.DisposeAsync();
            await page.Keyboard.PressAsync("n");
            await page.WaitForFunctionAsync(
                "document.getElementById('status').textContent.startsWith('Not saved')"
            );
            page.Url.Should().EndWith("#" + ids[2], "the page stays on the feature that was not saved");

            server = await RatingServer.StartAsync(dir, port);
            await page.GotoAsync(server.Address + "rate.html");
            await page.WaitForFunctionAsync(
                $"location.hash === '#{ids[2]}' && !!document.getElementById('feature-title')"
            );
            (await page.InputValueAsync("#rater")).Should().Be("tester", "the name is remembered");
            (await page.InnerTextAsync("#progress")).Should().Be($"2 of {ids.Count} rated");
            await Rate(() => page.Keyboard.PressAsync("3"), ids[3], "no");
            await Rate(() => page.ClickAsync("#btn-maybe"), ids[4], "maybe");
            await Rate(() => page.Keyboard.PressAsync("y"), ids[5], "yes");

            // A revision: back to the first feature, whose Yes is shown, and No instead.
            await page.ClickAsync($"#feature-list a[data-id='{ids[0]}']");
            await page.WaitForFunctionAsync($"location.hash === '#{ids[0]}'");
            (await page.GetAttributeAsync("#btn-yes", "class"))!.Should().Contain("chosen");
            await Rate(() => page.ClickAsync("#btn-no"), ids[5], "no");

            await server.DisposeAsync();
            server = await RatingServer.StartAsync(dir, port);
            await page.ReloadAsync();
            await page.WaitForFunctionAsync(
                $"location.hash === '#{ids[5]}' && !!document.getElementById('feature-title')"
            );
            (await page.InnerTextAsync("#progress")).Should().Be($"5 of {ids.Count} rated");
        }
        finally
        {
            await server.DisposeAsync();
        }

        var lines = File.ReadAllLines(Path.Combine(dir, RatingStudy.RatingsFile))
            .Select(l => JsonNode.Parse(l)!)
            .ToList();
        lines
            .Select(l => (l["feature"]!.GetValue<string>(), l["label"]!.GetValue<string>()))
            .Should()
            .Equal(
                (ids[0], "yes"),
                (ids[1], "maybe"),
                (ids[2], "no"),
                (ids[3], "maybe"),
                (ids[4], "yes"),
                (ids[0], "no")
            );
        lines.Should().OnlyContain(l => l["rater"]!.GetValue<string>() == "tester");
        lines[1]["description"]!.GetValue<string>().Should().Be("numbers in dates");
        lines[5]["revision"]!.GetValue<int>().Should().Be(2);
    }
}
