using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using FluentAssertions;
using IlgpuSae.Cli.Serve;
using IlgpuSae.Study.Dashboards;
using IlgpuSae.Tests.Infrastructure;
using Xunit;

namespace IlgpuSae.Tests.Dashboards;

/// <summary>The rating server over HTTP: saved ratings, revisions, restarts and the bad inputs of the
/// issue.</summary>
[Collection(EnvironmentCollection.Name)]
public sealed class RatingServerTests(StudyFixture study) : IClassFixture<StudyFixture>, IDisposable
{
    private readonly TempFolder _temp = new("ilgpusae-rating-server-");

    public void Dispose() => _temp.Dispose();

    private static StringContent Json(string text) => new(text, Encoding.UTF8, "application/json");

    private static async Task<(HttpStatusCode Code, JsonNode? Body)> Post(HttpClient http, string body)
    {
        using var response = await http.PostAsync("api/ratings", Json(body));
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, text.Length > 0 ? JsonNode.Parse(text) : null);
    }

    [Fact]
    public async Task Ratings_are_on_disk_when_answered_revisions_keep_history_and_a_restart_resumes()
    {
        var dir = study.CopyTo(_temp.Path("study"));
        var ids = study.Ids;
        var log = Path.Combine(dir, RatingStudy.RatingsFile);
        await using (var server = await RatingServer.StartAsync(dir, 0))
        {
            server.Address.Host.Should().Be("127.0.0.1");
            using var http = new HttpClient { BaseAddress = server.Address };
            var (code, body) = await Post(
                http,
                $$"""{"rater":"ann","feature":"{{ids[0]}}","label":"yes","description":"dates"}"""
            );
            code.Should().Be(HttpStatusCode.OK);
            body!["next"]!.GetValue<string>().Should().Be(ids[1]);
            File.ReadAllLines(log).Should().HaveCount(1, "the rating is on disk before the answer");
            (await Post(http, $$"""{"rater":"ann","feature":"{{ids[1]}}","label":"no"}"""))
                .Code.Should()
                .Be(HttpStatusCode.OK);
            (code, body) = await Post(http, $$"""{"rater":"ann","feature":"{{ids[0]}}","label":"maybe"}""");
            code.Should().Be(HttpStatusCode.OK);
            body!["revision"]!.GetValue<int>().Should().Be(2);
        }

        File.ReadAllLines(log).Should().HaveCount(3, "revisions are appended, not rewritten");
        await using (var server = await RatingServer.StartAsync(dir, 0))
        {
            using var http = new HttpClient { BaseAddress = server.Address };
            var state = JsonNode.Parse(await http.GetStringAsync("api/state?rater=ann"))!;
            state["next"]!
                .GetValue<string>()
                .Should()
                .Be(ids[2], "a restarted server continues after the rated ones");
            state["ratings"]![ids[0]]!["label"]!.GetValue<string>().Should().Be("maybe", "the latest wins");
            state["ratings"]![ids[0]]!["revision"]!.GetValue<int>().Should().Be(2);
            var other = JsonNode.Parse(await http.GetStringAsync("api/state?rater=bob"))!;
            other["next"]!.GetValue<string>().Should().Be(ids[0], "each rater has their own progress");
        }
    }

    [Fact]
    public async Task Bad_requests_are_refused_with_their_status_and_nothing_is_recorded()
    {
        var dir = study.CopyTo(_temp.Path("study"));
        var id = study.Ids[0];
        await using var server = await RatingServer.StartAsync(dir, 0);
        using var http = new HttpClient { BaseAddress = server.Address };
        (await Post(http, """{"rater":"ann","feature":"f000","label":"yes"}"""))
            .Code.Should()
            .Be(HttpStatusCode.NotFound);
        (await Post(http, $$"""{"rater":"ann","feature":"{{id}}","label":"great"}"""))
            .Code.Should()
            .Be(HttpStatusCode.BadRequest);
        (await Post(http, $$"""{"rater":"ann","feature":"{{id}}","label":"YES"}"""))
            .Code.Should()
            .Be(HttpStatusCode.BadRequest);
        (await Post(http, $$"""{"feature":"{{id}}","label":"yes"}"""))
            .Code.Should()
            .Be(HttpStatusCode.BadRequest);
        (await Post(http, $$"""{"rater":"ann","feature":"{{id}}","label":"yes","description":7}"""))
            .Code.Should()
            .Be(HttpStatusCode.BadRequest);
        (await Post(http, "{not json")).Code.Should().Be(HttpStatusCode.BadRequest);
        (await Post(http, "[1,2]")).Code.Should().Be(HttpStatusCode.BadRequest);
        var big =
            "{\"rater\":\"ann\",\"feature\":\""
            + id
            + "\",\"description\":\""
            + new string('x', 20000)
            + "\"}";
        (await Post(http, big)).Code.Should().Be(HttpStatusCode.RequestEntityTooLarge);
        (await http.GetAsync("api/features/nope")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await http.GetAsync($"api/features/{id}")).StatusCode.Should().Be(HttpStatusCode.OK);
        (await http.GetAsync("features/nope.js")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        (await http.GetAsync("key.json"))
            .StatusCode.Should()
            .Be(HttpStatusCode.NotFound, "only public/ is served");
        (await http.GetAsync("study.json")).StatusCode.Should().Be(HttpStatusCode.NotFound);
        foreach (
            var path in new[]
            {
                "features/..%2f..%2fkey.json",
                "features/%2e%2e/%2e%2e/key.json",
                "features/..\\..\\key.json",
            }
        )
        {
            using var request = new HttpRequestMessage(
                HttpMethod.Get,
                new Uri(server.Address + path, UriKind.Absolute)
            );
            var response = await http.SendAsync(request);
            response.StatusCode.Should().BeOneOf([HttpStatusCode.BadRequest, HttpStatusCode.NotFound], path);
            (await response.Content.ReadAsStringAsync())
                .Should()
                .NotContain("\"saes\"", "the key never leaks");
        }

        using (var raw = new System.Net.Sockets.TcpClient())
        {
            await raw.ConnectAsync(IPAddress.Loopback, server.Address.Port);
            using var stream = raw.GetStream();
            await stream.WriteAsync(
                Encoding.ASCII.GetBytes(
                    "GET /../../key.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                )
            );
            var reply = await new StreamReader(stream).ReadToEndAsync();
            reply.Should().NotContain("\"saes\"").And.MatchRegex("^HTTP/1.1 (400|404)");
        }

        (await http.GetAsync("rate.html")).StatusCode.Should().Be(HttpStatusCode.OK);
        File.Exists(Path.Combine(dir, RatingStudy.RatingsFile))
            .Should()
            .BeFalse("no bad request was recorded");
    }

    [Fact]
    public async Task A_second_server_on_the_same_study_refuses_to_start()
    {
        var dir = study.CopyTo(_temp.Path("study"));
        await using var first = await RatingServer.StartAsync(dir, 0);
        var second = async () => await RatingServer.StartAsync(dir, 0);
        (await second.Should().ThrowAsync<IOException>()).Which.Message.Should().Contain("in use by 'serve'");
    }

    [SkippableFact]
    public async Task A_full_disk_is_reported_as_not_saved_and_the_rating_is_not_counted()
    {
        Skip.IfNot(File.Exists("/dev/full"), "needs /dev/full (Linux)");
        var dir = study.CopyTo(_temp.Path("study"));
        File.CreateSymbolicLink(Path.Combine(dir, RatingStudy.RatingsFile), "/dev/full");
        await using var server = await RatingServer.StartAsync(dir, 0);
        using var http = new HttpClient { BaseAddress = server.Address };
        var (code, body) = await Post(
            http,
            $$"""{"rater":"ann","feature":"{{study.Ids[0]}}","label":"yes"}"""
        );
        ((int)code).Should().Be(507);
        body!["error"]!.GetValue<string>().Should().StartWith("Not saved");
        var state = JsonNode.Parse(await http.GetStringAsync("api/state?rater=ann"))!;
        state["rated"]!.GetValue<int>().Should().Be(0);
    }

    [Fact]
    public void A_study_without_a_key_cannot_be_unblinded_and_one_with_it_is_analyzed()
    {
        var dir = study.CopyTo(_temp.Path("study"));
        var key = Path.Combine(dir, RatingStudy.KeyFile);
        var moved = _temp.Path("key-elsewhere.json");
        File.Move(key, moved);
        var run = CliRunner.Run("rating-study", "analyze", "--dir", dir);
        run.Code.Should().Be(2);
        run.Err.Should().Contain("has no key").And.Contain("--key");

        // Ratings written as the server writes them: gated features Yes, baseline ones No, one revision.
        var log = RatingLog.Open(Path.Combine(dir, RatingStudy.RatingsFile));
        var saeOf = JsonNode.Parse(File.ReadAllText(moved))!["features"]!
            .AsObject()
            .ToDictionary(kv => kv.Key, kv => kv.Value!["sae"]!.GetValue<string>());
        foreach (var id in study.Ids)
        {
            log.Append("ann", id, "no", null);
            log.Append("ann", id, saeOf[id] == "gated" ? "yes" : "no", "revised");
        }

        File.AppendAllText(log.Path, "{\"torn");
        var ok = CliRunner.Run("rating-study", "analyze", "--dir", dir, "--key", moved);
        ok.Code.Should().Be(0, ok.Err);
        ok.Out.Should()
            .Contain("| gated | 4 | 4 | 0 | 0 | 1.000 |")
            .And.Contain("| baseline | 4 | 0 | 0 | 4 | 0.000 |");
        ok.Out.Should().Contain("| gated | baseline | 1.000 | [1.000, 1.000] |");
        ok.Out.Should().Contain("1 unreadable line");
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "analysis.json")))!;
        double p = json["pairs"]![0]!["p_value"]!.GetValue<double>();
        p.Should()
            .BeApproximately(
                2.0 / 70,
                0.01,
                "all 4 Yes in one group: 2 of the C(8,4) = 70 splits are as extreme"
            );
        File.Exists(Path.Combine(dir, "labels.png")).Should().BeTrue();
    }

    [Fact]
    public void Identical_label_samples_differ_by_zero_with_p_one_and_the_ci_covers_the_difference()
    {
        var same = RatingAnalysis.Compare("a", [1, 0.5, 0, 1], "b", [1, 0.5, 0, 1], 1);
        same.Difference.Should().Be(0);
        same.PValue.Should().Be(1);
        var shifted = RatingAnalysis.Compare("a", [1, 1, 0.5, 1, 0.5, 1], "b", [0, 0.5, 0, 1, 0, 0.5], 2);
        shifted.Difference.Should().BeApproximately(5.0 / 6 - 2.0 / 6, 1e-12);
        shifted.CiLow.Should().BeLessThan(shifted.Difference);
        shifted.CiHigh.Should().BeGreaterThan(shifted.Difference);
        shifted.PValue.Should().BeInRange(0.001, 0.2);
    }
}
