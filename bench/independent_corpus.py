"""A corpus drawn by independent code: a vertical firm directory and horizontal supplier lists, for held-out tests.

Usage:
    .venv/bin/python bench/independent_corpus.py --out DIR --seed N [--firms 300]
    .venv/bin/linkage-pipeline run --data-dir DIR
    .venv/bin/python bench/cross_corpus.py --corpus I1=DIR

Writes DIR/sources.yaml, DIR/firm_directory/{pages/,labels.csv} and DIR/supplier_lists/{pages/,labels.csv} in the
project's input contract. Same seed -> byte-identical files (all randomness from one seeded numpy Generator; no set
or hash ordering); about a minute per 300-firm corpus on one core.

This generator was written from the input contract alone, without reading the project's own corpus generator,
typeface lists, scan degradations or model code, and it imports nothing from ``linkage_pipeline``: its firm
vocabulary, old-form table, page layouts, typefaces and scan look are its own. It exists to test the project on
material its own renderer did not draw. **Never train on its corpora or choose a constant or threshold on them**;
once used for tuning they stop measuring that.

What it draws: ~300 firms from its own word lists (places, auspicious words, family names, katakana brands,
industries, legal forms before or after), ~19 % near-identical twins of another firm (製薬/製菓, 大成/大盛 ...). The
directory prints dense vertical entries (name column in larger type, then address, founding, capital, officers,
business lines) in prefecture sections, 2-4 tiers a page, old character forms (90 % of a pre-war volume, 55 % of a
post-war one, from its own 203-pair table), ~10 % of firms twice. The lists print one reporting firm a page and 8-36
partners in one of five layouts, in new forms, legal forms abbreviated ((株), ㈱, (資) ...), dropped or moved, or a
short name. Typefaces: MigMix 1P/2P, Migu 1C/1P/2M, Noto Serif CJK TC, Noto Sans CJK KR, Ume UI/P Gothic, Ume P
Mincho S3, Ume Hy Gothic O5, Ume Gothic S5 (all from packages ``.ci/setup`` installs). Scan look: rotation up to
1.4 degrees, yellowed paper with low-frequency brightness, uneven ink, dust and hairs, binding shadow, blur on 40 %
of pages, Gaussian noise, 40 % JPEG at quality 60-85. Label boxes are tight around each printed name after rotation.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import subprocess
import sys
import tempfile

import cv2
import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

# --------------------------------------------------------------------------------------------
# Vocabulary (new character forms; old forms are produced by OLD_FORMS)
# --------------------------------------------------------------------------------------------

OLD_FORMS_PAIRS = ["会會", "鉄鐵", "薬藥", "売賣", "学學", "発發", "国國", "気氣", "変變", "与與", "旧舊", "県縣", "広廣", "浜濱", "沢澤", "万萬", "号號", "団團", "医醫", "写寫", "点點", "楽樂", "歯齒", "糸絲", "繊纖", "鉱鑛", "党黨", "実實", "営營", "弁辯", "亜亞", "区區", "円圓", "払拂", "済濟", "辺邊", "斎齋", "寿壽", "栄榮", "徳德", "郷鄕", "静靜", "両兩", "伝傳", "体體", "価價", "剤劑", "労勞", "単單", "図圖", "塩鹽", "壱壹", "対對", "専專", "帯帶", "庁廳", "従從", "応應", "恵惠", "戦戰", "拡擴", "数數", "来來", "条條", "桜櫻", "検檢", "権權", "横橫", "浅淺", "満滿", "焼燒", "灯燈", "状狀", "独獨", "画畫", "当當", "真眞", "礼禮", "称稱", "稲稻", "粋粹", "経經", "絵繪", "継繼", "続續", "総總", "縄繩", "蔵藏", "装裝", "覧覽", "証證", "読讀", "豊豐", "予豫", "転轉", "軽輕", "醸釀", "銭錢", "鋳鑄", "関關", "険險", "雑雜", "駅驛", "験驗", "黒黑", "麦麥", "黄黃", "竜龍", "亀龜", "湾灣", "廃廢", "弾彈", "拝拜", "様樣", "歓歡", "温溫", "仏佛", "余餘", "参參", "収收", "台臺", "圧壓", "奥奧", "寛寬", "属屬", "帰歸", "弐貳", "径徑", "拠據", "担擔", "抜拔", "撃擊", "晋晉", "欧歐", "浄淨", "渉涉", "渓溪", "瀬瀨", "獣獸", "瓶甁", "畳疊", "穂穗", "緑綠", "縁緣", "縦縱", "胆膽", "荘莊", "薫薰", "虚虛", "衛衞", "誉譽", "賛贊", "践踐", "逓遞", "録錄", "鎮鎭", "頼賴", "駆驅", "騒騷", "髪髮", "鶏鷄", "齢齡", "乗乘", "児兒", "効效", "勧勸", "巻卷", "峡峽", "挙擧", "断斷", "歩步", "歴歷", "残殘", "毎每", "渋澁", "焔焰", "猟獵", "献獻", "盗盜", "砕碎", "禅禪", "穏穩", "聴聽", "脳腦", "臓臟", "舎舍", "芸藝", "蛍螢", "覚覺", "観觀", "触觸", "訳譯", "辞辭", "遅遲", "酔醉", "釈釋", "陥陷", "随隨", "隠隱", "霊靈", "顕顯", "艶艷", "麺麵"]

NATIONAL_PLACES = ["日本", "大日本", "東洋", "東亜", "帝国", "中央", "関東", "関西", "東京", "大阪", "東邦",
                   "南洋", "北海", "九州", "中部", "東北", "西部", "亜細亜", "太平洋", "極東", "中外", "内外"]
AUSPICIOUS = ["大和", "昭和", "日東", "富士", "旭", "朝日", "大成", "大正", "明治", "共栄", "協和", "興亜",
              "三和", "三共", "丸三", "丸一", "山一", "寿", "金剛", "太平", "千代田", "光", "栄", "日新",
              "日進", "新興", "大同", "東和", "日光", "菊水", "松竹", "福徳", "万年", "永楽", "宝", "双葉",
              "白鳥", "東光", "日之出", "国光", "三星", "大丸", "丸十", "亀甲", "鶴屋", "若松", "八紘",
              "大盛", "東陽", "共和", "三協", "帝都", "大平", "晃"]
FAMILY = ["山田", "鈴木", "田中", "高橋", "伊藤", "渡辺", "中村", "小林", "加藤", "吉田", "山本", "松本",
          "井上", "木村", "林", "清水", "斎藤", "岩崎", "安田", "浅野", "大倉", "古河", "藤田", "野村",
          "川崎", "岡田", "森", "池田", "石川", "前田", "小川", "長谷川", "村上", "近藤", "坂本", "遠藤",
          "青木", "西村", "福田", "太田", "三浦", "藤井", "岡本", "松田", "中川", "中野", "原田", "小野",
          "竹内", "金子", "和田", "石井", "上田", "森田", "柴田", "酒井", "工藤", "横山", "宮崎", "宮本",
          "内田", "高木", "安藤", "谷口", "大野", "丸山", "今井", "河野", "藤原", "小島", "服部", "久保",
          "杉山", "千葉", "増田", "平野", "大塚", "松井", "菅原", "武田", "上野", "市川", "杉本", "関",
          "鴻池", "辰馬", "茂木", "浜口", "堀越", "伊東", "山口", "田仲", "佐藤", "中林", "松木"]
GIVEN = ["太郎", "次郎", "一郎", "三郎", "正雄", "清", "茂", "勇", "武夫", "秀雄", "義雄", "政吉", "善兵衛",
         "彦太郎", "嘉七", "徳次郎", "栄一", "伝蔵", "辰五郎", "与三郎", "作治", "喜八", "為吉", "留吉",
         "久作", "庄之助", "利兵衛", "長次郎", "寅吉", "豊治", "実", "博", "弘", "進", "孝", "一夫",
         "正一", "健三", "敬之助", "源太郎", "文蔵", "俊", "貞治", "藤吉", "重雄", "恒雄", "龍雄"]
BRANDS = ["ライオン", "サクラ", "スター", "ユニオン", "ダイヤ", "キング", "クラウン", "ローヤル",
          "ゼネラル", "コロナ", "タイガー", "ツバメ", "オリエンタル", "ナショナル", "エース", "ミカド",
          "ヒノデ", "カトレヤ", "ベル", "ホープ", "アルプス", "パール", "ヤマト", "フジ", "アサヒ"]
PRODUCTS = ["人絹", "毛糸", "麦酒", "硫酸", "曹達", "電線", "鋼管", "石炭", "瓦斯", "鋼板", "肥料", "製氷",
            "硝子", "燐寸", "煉瓦", "石鹸", "缶詰", "鉛筆", "時計", "自転車", "蓄音器", "ラヂオ", "セメント",
            "タイヤ", "ペイント", "ミシン", "レコード"]

# industry suffix -> (business lines, short-name rule or None, product prefix allowed)
INDUSTRIES = {
    "紡績": (["綿糸紡績", "綿布製造", "人絹糸", "毛糸紡績", "加工綿布"], "紡", False),
    "紡織": (["綿糸紡績", "綿織物製造", "帆布"], None, False),
    "製紙": (["洋紙製造", "板紙製造", "和紙", "新聞用紙"], None, False),
    "製糸": (["生糸製造", "繭取引", "玉糸"], None, False),
    "鉄工所": (["機械製作", "鋳物製造", "農具製造", "汽罐製造"], "鉄工", False),
    "鉄工場": (["機械製作", "鋳物製造", "鍛造品"], None, False),
    "商店": (["綿糸布卸売", "雑貨卸", "肥料販売", "金物商", "薬種問屋", "紙商", "洋品雑貨", "米穀商"], None, False),
    "商事": (["輸出入貿易", "鉄鋼販売", "繊維製品販売", "機械器具販売"], None, False),
    "商会": (["機械器具販売", "輸入雑貨", "工業用品販売", "医療器械販売"], None, False),
    "産業": (["各種工業", "化学製品", "農産加工", "繊維製品"], "", False),
    "化学工業": (["硫酸製造", "染料製造", "化学肥料", "塗料製造", "曹達製造"], "化学", True),
    "化成": (["合成樹脂", "化学薬品製造"], None, False),
    "製薬": (["医薬品製造販売", "売薬", "化粧品", "ワクチン製造"], None, False),
    "製菓": (["菓子製造", "飴製造", "ビスケット製造", "キャラメル製造"], None, False),
    "醸造": (["清酒醸造", "醤油醸造", "味噌醸造", "酢醸造"], None, False),
    "酒造": (["清酒醸造", "焼酎製造"], None, False),
    "織物": (["絹織物製造", "綿織物製造", "羽二重", "銘仙"], None, False),
    "電機": (["電動機製造", "変圧器製造", "電気機械器具", "扇風機"], None, False),
    "電気工業": (["電線製造", "電球製造", "電気器具"], "電工", True),
    "硝子": (["板硝子製造", "瓶製造", "理化学用硝子"], None, False),
    "製作所": (["機械製作", "計器製作", "精密機械", "工作機械"], "", True),
    "製造所": (["各種製品製造", "金属製品製造"], None, True),
    "興業": (["土木建築請負", "鉱山経営", "不動産", "倉庫業"], None, False),
    "鉱業": (["石炭採掘", "金銀銅鉱採掘", "硫黄採掘"], "鉱", False),
    "窯業": (["陶磁器製造", "耐火煉瓦", "衛生陶器", "碍子製造"], None, False),
    "製粉": (["小麦粉製造", "製麺"], None, False),
    "製糖": (["精製糖製造", "砂糖販売"], "糖", False),
    "造船所": (["船舶製造修繕", "汽船建造"], "造船", False),
    "鋳造所": (["鋳物製造", "鋳鋼製造"], None, False),
    "油脂": (["石鹸製造", "硬化油", "グリセリン"], None, False),
    "ゴム工業": (["ゴム靴製造", "タイヤ製造", "ゴム製品"], "ゴム", False),
    "倉庫": (["倉庫業", "運送業", "保管"], None, False),
    "運輸": (["貨物運送", "海運業", "通運"], None, False),
    "貿易": (["輸出入", "生糸輸出", "雑貨輸出"], None, False),
    "金属工業": (["伸銅", "電線製造", "金属製品"], "金属", True),
    "機械": (["工作機械製造", "紡織機製造", "農業機械"], None, True),
    "製鋼所": (["鋼材製造", "特殊鋼", "鍛鋼品"], "製鋼", False),
    "染工": (["染色整理", "捺染", "晒加工"], None, False),
    "印刷": (["活版印刷", "製本", "石版印刷"], None, False),
    "写真工業": (["写真材料", "感光紙製造", "乾板製造"], "写真", False),
    "薬品": (["薬品卸売", "工業薬品", "試薬"], None, False),
    "医療器": (["医療器械製造販売", "注射器製造"], None, False),
    "歯科材料": (["歯科材料製造", "歯科器械"], None, False),
    "毛織": (["毛織物製造", "羅紗", "毛布"], None, False),
    "工業": (["各種製品製造", "金属加工", "機械部品"], None, True),
    "工業所": (["金属製品製造", "機械部品"], None, True),
    "水産": (["漁業", "缶詰製造", "冷凍"], None, False),
    "兄弟商会": (["輸入雑貨", "機械器具販売"], None, False),
}
PERSONAL_IND = ["商店", "鉄工所", "商会", "製作所", "醸造", "酒造", "織物", "製薬", "工業所", "兄弟商会",
                "製菓", "染工", "印刷", "薬品", "製糸"]
GENERAL_IND = [k for k in INDUSTRIES if k not in ("兄弟商会", "鉄工場", "製造所", "紡織", "化成")]

# one-character confusions that make a *different* firm (never old/new variants of each other)
TWIN_SUBS = [("製薬", "製菓"), ("製菓", "製薬"), ("製紙", "製糸"), ("製糸", "製紙"), ("大成", "大盛"),
             ("大盛", "大成"), ("大成", "大正"), ("東亜", "東邦"), ("東邦", "東亜"), ("東亜", "東和"),
             ("日東", "日本"), ("日東", "日新"), ("日新", "日進"), ("日進", "日新"), ("昭和", "協和"),
             ("協和", "共和"), ("大和", "大同"), ("三和", "三協"), ("三協", "三共"), ("商事", "商会"),
             ("商会", "商事"), ("商店", "商会"), ("工業", "興業"), ("興業", "工業"), ("産業", "工業"),
             ("電機", "電気"), ("紡績", "紡織"), ("製作所", "製造所"), ("化学", "化成"),
             ("鉄工所", "鉄工場"), ("山田", "山口"), ("田中", "田仲"), ("伊藤", "伊東"), ("佐藤", "佐野"),
             ("中村", "中林"), ("松本", "松木"), ("太平", "大平"), ("大平", "太平"), ("光", "晃"),
             ("東洋", "東陽"), ("東陽", "東洋"), ("中央", "中外"), ("帝国", "帝都"), ("丸三", "丸二"),
             ("丸一", "丸十"), ("山一", "山十"), ("日本", "日東"), ("富士", "富山"), ("大阪", "大坂")]

# prefecture key -> headings (pre-war, post-war), local prefixes, weight, (pre-war places, post-war places)
PREFS = [
    ("東京", ("東京府", "東京都"), ["東京", "江戸", "武蔵", "京浜", "城東", "城南", "隅田"], 30,
     ([("東京市日本橋区", ["本町", "室町", "小網町", "兜町", "堀留町"]), ("東京市京橋区", ["銀座", "築地", "新富町", "八丁堀"]),
       ("東京市神田区", ["須田町", "錦町", "鍛冶町"]), ("東京市麹町区", ["丸ノ内", "有楽町"]), ("東京市芝区", ["芝浦", "田町", "愛宕町"]),
       ("東京市本所区", ["緑町", "石原町", "横網町"]), ("東京市深川区", ["木場", "平野町", "猿江町"]),
       ("東京市品川区", ["大崎", "大井町"]), ("東京市蒲田区", ["蒲田", "糀谷町"]), ("東京市王子区", ["王子町", "豊島"])],
      [("東京都中央区", ["日本橋本町", "日本橋室町", "日本橋小網町", "京橋", "銀座", "築地"]),
       ("東京都千代田区", ["丸の内", "大手町", "神田須田町", "神田錦町"]), ("東京都港区", ["芝浦", "芝田町", "芝公園"]),
       ("東京都墨田区", ["緑町", "石原町"]), ("東京都江東区", ["深川木場", "深川平野町"]),
       ("東京都品川区", ["大崎", "大井町"]), ("東京都大田区", ["蒲田", "糀谷町"]), ("東京都北区", ["王子", "豊島"])])),
    ("大阪", ("大阪府", "大阪府"), ["大阪", "浪速", "浪華", "摂津", "阪神", "泉州"], 25,
     ([("大阪市東区", ["本町", "道修町", "北浜", "平野町", "備後町", "安土町"]), ("大阪市西区", ["江戸堀", "京町堀", "阿波座"]),
       ("大阪市北区", ["堂島", "梅田", "天満"]), ("大阪市此花区", ["西九条", "島屋町"]), ("大阪市港区", ["築港", "市岡"]),
       ("大阪市浪速区", ["難波", "芦原町"]), ("堺市", ["大浜", "宿院町"]), ("岸和田市", ["本町", "堺町"])],) * 2),
    ("愛知", ("愛知県", "愛知県"), ["名古屋", "中京", "尾張", "三河", "愛知"], 10,
     ([("名古屋市中区", ["栄町", "錦", "大須"]), ("名古屋市西区", ["那古野", "押切町"]), ("名古屋市熱田区", ["神宮", "旗屋町"]),
       ("名古屋市東区", ["東片端", "主税町"]), ("一宮市", ["本町", "栄"]), ("豊橋市", ["花田町", "札木町"]),
       ("岡崎市", ["康生町", "伝馬町"]), ("瀬戸市", ["陶原町", "深川町"])],) * 2),
    ("兵庫", ("兵庫県", "兵庫県"), ["神戸", "阪神", "播磨", "兵庫", "灘"], 8,
     ([("神戸市兵庫区", ["東出町", "湊町"]), ("神戸市林田区", ["東尻池町", "駒ケ林町"]), ("神戸市葺合区", ["脇浜町", "熊内町"]),
       ("神戸市神戸区", ["栄町通", "海岸通"]), ("姫路市", ["飾磨", "竜野町"]), ("尼崎市", ["大物町", "東本町"]),
       ("西宮市", ["今津", "鞍掛町"])],
      [("神戸市兵庫区", ["東出町", "湊町"]), ("神戸市長田区", ["東尻池町", "駒ケ林町"]), ("神戸市葺合区", ["脇浜町", "熊内町"]),
       ("神戸市生田区", ["栄町通", "海岸通"]), ("姫路市", ["飾磨", "竜野町"]), ("尼崎市", ["大物町", "東本町"]),
       ("西宮市", ["今津", "鞍掛町"])])),
    ("神奈川", ("神奈川県", "神奈川県"), ["横浜", "京浜", "相模", "湘南"], 7,
     ([("横浜市中区", ["山下町", "本町", "海岸通"]), ("横浜市鶴見区", ["末広町", "大黒町"]),
       ("横浜市神奈川区", ["守屋町", "子安町"]), ("川崎市", ["港町", "大師河原"]), ("横須賀市", ["汐入町", "大滝町"])],) * 2),
    ("京都", ("京都府", "京都府"), ["京都", "平安", "山城", "洛東"], 6,
     ([("京都市下京区", ["烏丸通", "四条通", "七条"]), ("京都市中京区", ["室町通", "新町通"]),
       ("京都市上京区", ["西陣", "堀川通"]), ("京都市伏見区", ["竹田", "京町"])],) * 2),
    ("福岡", ("福岡県", "福岡県"), ["九州", "筑豊", "博多", "筑紫", "西海"], 5,
     ([("福岡市", ["博多", "天神町", "中洲"]), ("八幡市", ["枝光", "西本町"]), ("小倉市", ["京町", "紺屋町"]),
       ("若松市", ["本町", "浜町"]), ("久留米市", ["日吉町", "通町"]), ("大牟田市", ["浜町", "新町"])],) * 2),
    ("北海道", ("北海道", "北海道"), ["北海", "札幌", "小樽", "北日本"], 3,
     ([("札幌市", ["北一条", "南二条"]), ("小樽市", ["色内町", "稲穂町"]), ("函館市", ["末広町", "大町"]),
       ("室蘭市", ["輪西町", "本町"]), ("旭川市", ["四条通", "宮下通"])],) * 2),
    ("静岡", ("静岡県", "静岡県"), ["静岡", "駿河", "遠州", "東海"], 3,
     ([("静岡市", ["呉服町", "両替町"]), ("浜松市", ["田町", "鍛冶町"]), ("清水市", ["港町", "江尻町"]),
       ("沼津市", ["本町", "通横町"])],) * 2),
    ("広島", ("広島県", "広島県"), ["広島", "芸備", "安芸", "備後"], 3,
     ([("広島市", ["紙屋町", "堀川町"]), ("呉市", ["本通", "中通"]), ("尾道市", ["土堂町", "久保町"]),
       ("福山市", ["本町", "霞町"])],) * 2),
]
PHONE_EXCH = {"東京": ["日本橋", "京橋", "丸ノ内", "神田", "本所", "芝", "銀座"], "大阪": ["本局", "東", "西", "北", "土佐堀"]}

FONT_NAMES = ["MigMix 1P", "MigMix 2P", "Migu 1C", "Migu 1P", "Migu 2M", "Noto Serif CJK TC",
              "Noto Sans CJK KR", "Ume UI Gothic", "Ume P Gothic", "Ume P Mincho S3", "Ume Hy Gothic O5",
              "Ume Gothic S5"]

ROT_V = "ー－―‐〜～…‥（）「」『』【】〔〕［］＜＞《》〈〉()[]-=＝:：；;"
PUNCT_V = "、。，．,."
SMALL_KANA = "ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ"

DIGITS_POS = "〇一二三四五六七八九"

# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


class Rng:
    """Thin wrapper over numpy Generator with python-ish helpers (deterministic)."""

    def __init__(self, seed: int) -> None:
        self.g = np.random.Generator(np.random.PCG64(seed))

    def random(self) -> float:
        return float(self.g.random())

    def uniform(self, a: float, b: float) -> float:
        return float(self.g.uniform(a, b))

    def randint(self, a: int, b: int) -> int:  # inclusive
        return int(self.g.integers(a, b + 1))

    def choice(self, seq):
        return seq[int(self.g.integers(0, len(seq)))]

    def wchoice(self, seq, weights):
        w = np.asarray(weights, dtype=float)
        return seq[int(self.g.choice(len(seq), p=w / w.sum()))]

    def sample(self, seq, k):
        idx = self.g.choice(len(seq), size=k, replace=False)
        return [seq[int(i)] for i in idx]

    def shuffle(self, seq):
        idx = self.g.permutation(len(seq))
        return [seq[int(i)] for i in idx]

    def child(self) -> Rng:
        return Rng(int(self.g.integers(0, 2**62)))


def kanji_trad(n: int) -> str:
    """Traditional kanji numeral with 十百千萬億 (1 -> 一, 1500000 -> 百五十万)."""
    if n == 0:
        return "〇"

    def under_10000(m: int) -> str:
        s = ""
        for val, ch in ((1000, "千"), (100, "百"), (10, "十")):
            d = m // val
            m %= val
            if d:
                s += ("" if d == 1 else DIGITS_POS[d]) + ch
        if m:
            s += DIGITS_POS[m]
        return s

    s = ""
    oku, rest = divmod(n, 100_000_000)
    man, rest = divmod(rest, 10_000)
    if oku:
        s += (under_10000(oku) if oku > 1 else "一") + "億"
    if man:
        s += (under_10000(man) if man > 1 else "一") + "万"
    s += under_10000(rest)
    return s


def kanji_pos(n: int, group: bool = False) -> str:
    """Positional kanji digits (2345 -> 二三四五), optionally grouped by thousands with 、."""
    s = str(n)
    if group:
        s = f"{n:,}".replace(",", "、")
    return "".join(DIGITS_POS[int(c)] if c.isdigit() else c for c in s)


def year_text(era: str, y: int) -> str:
    return era + ("元" if y == 1 else kanji_trad(y)) + "年"


# --------------------------------------------------------------------------------------------
# Fonts and glyph rendering
# --------------------------------------------------------------------------------------------


def usable_font(path: str, idx: int):
    """Return (path, index) of a font FreeType can render; strip broken TrueType hinting if needed.

    Some Ume fonts carry hinting bytecode that FreeType rejects ("invalid opcode"); an unhinted
    copy is written once to a cache folder under the system's temporary directory (the glyph outlines are unchanged).
    """
    try:
        ImageFont.truetype(path, 24, index=idx).getmask2("株")
        return path, idx
    except OSError:
        pass
    cache = os.path.join(tempfile.gettempdir(), "independent_corpus_fontcache")
    os.makedirs(cache, exist_ok=True)
    dst = os.path.join(cache, f"unhinted_{idx}_" + os.path.basename(path).rsplit(".", 1)[0] + ".ttf")
    if not os.path.exists(dst):
        tt = TTFont(path, fontNumber=idx)
        for tag in ("fpgm", "prep", "cvt ", "hdmx", "LTSH", "VDMX"):
            if tag in tt:
                del tt[tag]
        tmp = dst + ".tmp"
        tt.save(tmp)
        os.replace(tmp, dst)
    ImageFont.truetype(dst, 24, index=0).getmask2("株")
    return dst, 0


class FontSet:
    def __init__(self) -> None:
        self.specs = []  # (name, path, index)
        self.cmaps = []
        for name in FONT_NAMES:
            try:
                out = subprocess.check_output(["fc-match", "-f", "%{file}|%{index}|%{family}", name]).decode()
            except (OSError, subprocess.CalledProcessError):
                continue
            path, idx, fam = out.split("|", 2)
            if name.lower() not in fam.lower():
                # another face would draw another corpus from the same seed: refuse rather than substitute
                raise SystemExit(f"font {name!r} is not installed (fc-match gave {fam!r}); run `bash .ci/setup`, "
                                 "which installs fonts-noto-cjk, fonts-migmix and fonts-horai-umefont")
            path, idx = usable_font(path, int(idx))
            self.specs.append((name, path, int(idx)))
            self.cmaps.append(frozenset(TTFont(path, fontNumber=int(idx), lazy=True).getBestCmap().keys()))
        if not self.specs:
            raise SystemExit("no usable fonts")
        self._pil = {}
        self._glyphs = {}

    def covered(self, ch: str) -> bool:
        return any(ord(ch) in cm for cm in self.cmaps)

    def pick(self, ch: str, fi: int) -> int:
        """Font index to draw ch with: the page font if it has the glyph, else the first that does."""
        if ord(ch) in self.cmaps[fi]:
            return fi
        for j in range(len(self.specs)):
            if ord(ch) in self.cmaps[j]:
                return j
        raise ValueError(f"no font has glyph {ch!r} U+{ord(ch):04X}")

    def pil(self, fi: int, size: int) -> ImageFont.FreeTypeFont:
        key = (fi, size)
        if key not in self._pil:
            _, path, idx = self.specs[fi]
            self._pil[key] = ImageFont.truetype(path, size, index=idx)
        return self._pil[key]

    def advance_h(self, ch: str, fi: int, size: int) -> float:
        if ch == "\u3000":
            return float(size)
        return float(self.pil(self.pick(ch, fi), size).getlength(ch))

    def glyph(self, ch: str, fi: int, size: int, vertical: bool, bold: bool):
        """Rendered glyph: (mask float32 HxW in 0..1 or None, dx, dy, advance, ink_rect or None).

        The mask's top-left sits at (cell_x + dx, cell_y + dy), where the cell is the em box
        (vertical) or the advance box (horizontal) whose top-left is the pen position.
        """
        fi = self.pick(ch, fi) if ch not in " \u3000" else fi
        key = (ch, fi, size, vertical, bold)
        if key in self._glyphs:
            return self._glyphs[key]
        font = self.pil(fi, size)
        adv = float(size) if ch == "\u3000" else float(font.getlength(ch))
        pad = size
        sw = max(1, round(size / 30)) if bold else 0
        if vertical:
            S = size + 2 * pad
            img = Image.new("L", (S, S), 0)
            x = pad + (size - adv) / 2.0
            if ch in PUNCT_V:
                x = pad
        else:
            img = Image.new("L", (int(math.ceil(adv)) + 2 * pad, size + 2 * pad), 0)
            x = pad
        if ch not in " \u3000":
            ImageDraw.Draw(img).text((x, pad + 0.88 * size), ch, font=font, fill=255, anchor="ls",
                                     stroke_width=sw, stroke_fill=255)
        arr = np.asarray(img, dtype=np.uint8)
        sx = sy = 0.0
        if vertical:
            if ch in ROT_V:
                arr = np.ascontiguousarray(np.rot90(arr, -1))
            elif ch in PUNCT_V:
                ys, xs = np.nonzero(arr > 40)
                if len(xs):
                    cx, cy = (xs.min() + xs.max()) / 2.0, (ys.min() + ys.max()) / 2.0
                    sx, sy = pad + 0.70 * size - cx, pad + 0.30 * size - cy
            elif ch in SMALL_KANA:
                sx, sy = 0.10 * size, -0.10 * size
            adv = float(size)
        ys, xs = np.nonzero(arr > 0)
        if len(xs) == 0:
            res = (None, 0, 0, adv, None)
        else:
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = arr[y0:y1, x0:x1].astype(np.float32) / 255.0
            dx, dy = x0 - pad + int(round(sx)), y0 - pad + int(round(sy))
            ys2, xs2 = np.nonzero(arr[y0:y1, x0:x1] > 40)
            if len(xs2):
                rect = (dx + xs2.min(), dy + ys2.min(), dx + xs2.max() + 1, dy + ys2.max() + 1)
            else:
                rect = (dx, dy, dx + crop.shape[1], dy + crop.shape[0])
            res = (crop, dx, dy, adv, rect)
        self._glyphs[key] = res
        return res


# --------------------------------------------------------------------------------------------
# Page canvas: ink layer + labels with per-glyph rectangles
# --------------------------------------------------------------------------------------------


class Page:
    def __init__(self, W: int, H: int, fonts: FontSet, rng: Rng) -> None:
        self.W, self.H = W, H
        self.fonts = fonts
        self.rng = rng
        self.ink = np.zeros((H, W), dtype=np.float32)
        self.labels = []  # dict(text, role, eid, rects)
        self.glyph_lo = rng.uniform(0.78, 0.92)

    def _paste(self, mask: np.ndarray, x: int, y: int) -> None:
        h, w = mask.shape
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, self.W), min(y + h, self.H)
        if x1 <= x0 or y1 <= y0:
            return
        sub = mask[y0 - y:y1 - y, x0 - x:x1 - x] * self.rng.uniform(self.glyph_lo, 1.0)
        np.maximum(self.ink[y0:y1, x0:x1], sub, out=self.ink[y0:y1, x0:x1])

    def measure_h(self, text: str, size: int, fi: int, track: float = 0.0) -> float:
        return sum(self.fonts.advance_h(c, fi, size) + track * size for c in text) - (track * size if text else 0)

    def text_h(self, text: str, x: float, y: float, size: int, fi: int, bold=False, track=0.0):
        """Draw horizontally with the em box top at y. Returns (glyph rects, x after)."""
        rects = []
        for c in text:
            mask, dx, dy, adv, rect = self.fonts.glyph(c, fi, size, False, bold)
            px, py = int(round(x)), int(round(y))
            if mask is not None:
                self._paste(mask, px + dx, py + dy)
                rects.append((px + rect[0], py + rect[1], px + rect[2], py + rect[3]))
            x += adv + track * size
        return rects, x - track * size

    def text_v(self, text: str, xc: float, y: float, size: int, fi: int, bold=False, track=0.0):
        """Draw vertically (top to bottom), column centred at xc, first em box top at y."""
        rects = []
        for c in text:
            mask, dx, dy, adv, rect = self.fonts.glyph(c, fi, size, True, bold)
            px, py = int(round(xc - size / 2.0)), int(round(y))
            if mask is not None:
                self._paste(mask, px + dx, py + dy)
                rects.append((px + rect[0], py + rect[1], px + rect[2], py + rect[3]))
            y += size * (1.0 + track)
        return rects, y

    def label(self, text: str, role: str, eid: str, rects) -> None:
        if rects:
            self.labels.append({"text": text, "role": role, "eid": eid, "rects": list(rects)})

    def rule(self, x0, y0, x1, y1, thick=2, val=0.9) -> None:
        cv2.line(self.ink, (int(x0), int(y0)), (int(x1), int(y1)), float(val), int(thick), lineType=cv2.LINE_8)

    def rect(self, x0, y0, x1, y1, thick=2, val=0.9) -> None:
        cv2.rectangle(self.ink, (int(x0), int(y0)), (int(x1), int(y1)), float(val), int(thick), lineType=cv2.LINE_8)


def smooth_field(rng: Rng, H: int, W: int, lo: float, hi: float, cells=(5, 7)) -> np.ndarray:
    small = rng.g.random((cells[0], cells[1])).astype(np.float32)
    f = cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)
    f = np.clip(f, 0, 1)
    return lo + (hi - lo) * f


def finish_page(page: Page, out_dir: str, stem: str, rng: Rng, kind: str):
    """Scan look: rotation, paper, uneven ink, blur, noise, dust, shadow; save; return label rows."""
    H, W = page.H, page.W
    ink = page.ink
    # stroke weight: some pages bleed, some are light
    r = rng.random()
    if r < 0.25:
        ink = np.clip(cv2.GaussianBlur(ink, (0, 0), 0.6) * 1.35, 0, 1)
    elif r < 0.4:
        ink = ink ** 1.3
    # rotation (ink only, so the paper has no borders)
    angle = rng.uniform(-1.4, 1.4) if rng.random() < 0.85 else rng.uniform(-0.2, 0.2)
    M = cv2.getRotationMatrix2D((W / 2.0, H / 2.0), angle, 1.0)
    ink = cv2.warpAffine(ink, M, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    # uneven ink darkness
    ink = ink * smooth_field(rng, H, W, rng.uniform(0.62, 0.85), 1.0, cells=(rng.randint(3, 7), rng.randint(3, 6)))
    # dust specks and the odd hair
    for _ in range(int(rng.g.poisson(14))):
        cx, cy = rng.randint(0, W - 1), rng.randint(0, H - 1)
        ax, ay = rng.uniform(0.6, 2.4), rng.uniform(0.6, 2.4)
        cv2.ellipse(ink, (cx, cy), (max(1, int(round(ax))), max(1, int(round(ay)))), rng.uniform(0, 180), 0, 360,
                    rng.uniform(0.35, 0.9), -1, lineType=cv2.LINE_8)
    if rng.random() < 0.15:
        cx, cy = rng.randint(0, W - 1), rng.randint(0, H - 1)
        pts = np.array([[cx + int(30 * math.sin(t / 3.0)) + 4 * t, cy + 5 * t] for t in range(rng.randint(8, 20))],
                       np.int32)
        cv2.polylines(ink, [pts], False, rng.uniform(0.3, 0.6), 1, lineType=cv2.LINE_8)
    # paper
    base = np.array([rng.uniform(228, 246), 0, 0], dtype=np.float32)
    base[1] = base[0] - rng.uniform(3, 14)
    base[2] = base[1] - rng.uniform(8, 30)
    bright = smooth_field(rng, H, W, 0.95, 1.02, cells=(4, 3))
    paper = bright[:, :, None] * base[None, None, :]
    if kind == "list" and rng.random() < 0.15:  # faint printed ruling on the form
        step = rng.randint(70, 110)
        off = rng.randint(0, step)
        tone = np.array([rng.uniform(150, 190), rng.uniform(170, 200), rng.uniform(195, 215)], dtype=np.float32)
        a = rng.uniform(0.12, 0.22)
        for yy in range(off, H, step):
            paper[yy:yy + 2, :, :] = paper[yy:yy + 2, :, :] * (1 - a) + tone * a
    if rng.random() < 0.3:  # binding / margin shadow
        width = rng.randint(60, 170)
        depth = rng.uniform(0.08, 0.25)
        ramp = (1.0 - depth * (1.0 - np.arange(width, dtype=np.float32) / width) ** 2)
        if rng.random() < 0.5:
            paper[:, :width, :] *= ramp[None, :, None]
        else:
            paper[:, W - width:, :] *= ramp[::-1][None, :, None]
    inkcol = np.array([rng.uniform(20, 48), rng.uniform(18, 42), rng.uniform(18, 45)], dtype=np.float32)
    a = np.clip(ink, 0, 1)[:, :, None]
    img = paper * (1 - a) + inkcol[None, None, :] * a
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.45, 0.9))
    img = img + rng.g.normal(0.0, rng.uniform(2.0, 6.0), size=(H, W, 1)).astype(np.float32)
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    grey = rng.random() < 0.45
    pil = Image.fromarray(img, "RGB")
    if grey:
        pil = pil.convert("L")
    if rng.random() < 0.4:
        name = stem + ".jpg"
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=rng.randint(60, 85))
    else:
        name = stem + ".png"
        buf = io.BytesIO()
        pil.save(buf, format="PNG", compress_level=6)
    with open(os.path.join(out_dir, name), "wb") as fh:
        fh.write(buf.getvalue())
    rows = []
    for lab in page.labels:
        pts = []
        for (x0, y0, x1, y1) in lab["rects"]:
            pts.extend([(x0, y0), (x1, y0), (x0, y1), (x1, y1)])
        P = np.asarray(pts, dtype=np.float64)
        Q = P @ M[:, :2].T + M[:, 2]
        bx0 = max(0, int(math.floor(Q[:, 0].min())))
        by0 = max(0, int(math.floor(Q[:, 1].min())))
        bx1 = min(W, int(math.ceil(Q[:, 0].max())))
        by1 = min(H, int(math.ceil(Q[:, 1].max())))
        rows.append([name, bx0, by0, bx1, by1, lab["text"], lab["eid"], lab["role"]])
    return rows


# --------------------------------------------------------------------------------------------
# Firms
# --------------------------------------------------------------------------------------------


class Firm:
    def __init__(self) -> None:
        self.eid = ""
        self.parts = []  # [prefix, product, industry]
        self.industry = ""
        self.legal = None
        self.legal_pos = "post"
        self.short = None
        self.pref = 0
        self.address = ""
        self.founded = ""
        self.capital = 0
        self.officers = []
        self.lines = []
        self.in_lists = True

    @property
    def core(self) -> str:
        return "".join(self.parts)


def compose_core(rng: Rng, pref: int):
    """Return [prefix, product, industry] with industry the key into INDUSTRIES."""
    r = rng.random()
    if r < 0.25:
        ind = rng.choice(PERSONAL_IND)
        fam = rng.choice(FAMILY)
        if rng.random() < 0.08:
            fam = fam + rng.choice(["屋", "組"])
        return [fam, "", ind]
    if r < 0.35:
        ind = rng.choice(["製薬", "化学工業", "写真工業", "ゴム工業", "電機", "製菓", "商会", "工業", "硝子",
                          "油脂", "製作所", "商事"])
        return [rng.choice(BRANDS), "", ind]
    if rng.random() < 0.45:
        prefix = rng.choice(PREFS[pref][2])
    elif rng.random() < 0.5:
        prefix = rng.choice(NATIONAL_PLACES)
    else:
        prefix = rng.choice(AUSPICIOUS)
    ind = rng.choice(GENERAL_IND)
    product = ""
    if INDUSTRIES[ind][2] and rng.random() < 0.35:
        product = rng.choice(PRODUCTS)
    return [prefix, product, ind]


def choose_legal(rng: Rng, firm: Firm, era: str):
    ind = firm.industry
    personal = firm.parts[0] in FAMILY or firm.parts[0][:-1] in FAMILY
    if ind in ("商店", "兄弟商会") or (personal and ind in ("醸造", "酒造", "織物")):
        opts, w = ["株式会社", "合資会社", "合名会社", None], [0.25, 0.35, 0.25, 0.15]
    elif personal:
        opts, w = ["株式会社", "合資会社", "合名会社", "有限会社"], [0.5, 0.3, 0.1, 0.1]
    else:
        opts, w = ["株式会社", "合資会社", "有限会社", "合名会社"], [0.84, 0.07, 0.05, 0.04]
    legal = rng.wchoice(opts, w)
    if legal is None:
        pos = "post"
    elif legal == "株式会社":
        pos = "pre" if rng.random() < 0.45 else "post"
    else:
        pos = "pre" if rng.random() < 0.8 else "post"
    return legal, pos


def make_short(firm: Firm, taken) -> str | None:
    rule = INDUSTRIES.get(firm.industry, (None, None, None))[1]
    prefix, product = firm.parts[0], firm.parts[1]
    cands = []
    if rule is not None and firm.parts[2] == firm.industry:  # a twin's altered suffix has no abbreviation
        cands.append(prefix + product + rule)
    if firm.parts[0] in BRANDS:
        cands.append(prefix)
    for c in cands:
        if len(c) >= 2 and c != firm.core and c not in taken:
            return c
    return None


def twin_subs(f: Firm):
    return [(a, b) for (a, b) in TWIN_SUBS if any(a == p or (a in p and len(a) >= 2) for p in f.parts)]


def make_firms(rng: Rng, n: int, era: str):
    firms = []
    cores = {}
    weights = [p[3] for p in PREFS]
    twins = 0
    while len(firms) < n:
        f = Firm()
        f.pref = int(rng.wchoice(list(range(len(PREFS))), weights))
        made = False
        twinable = [g for g in firms if twin_subs(g)]
        if twinable and rng.random() < 0.3:
            base = rng.choice(twinable)
            subs = twin_subs(base)
            if subs:
                a, b = rng.choice(subs)
                parts = list(base.parts)
                for i, p in enumerate(parts):
                    if a == p or (a in p and len(a) >= 2):
                        parts[i] = p.replace(a, b, 1)
                        break
                f.parts = parts
                f.industry = parts[2] if parts[2] in INDUSTRIES else base.industry
                f.pref = base.pref if rng.random() < 0.5 else f.pref
                made = True
        if not made:
            f.parts = compose_core(rng, f.pref)
            f.industry = f.parts[2]
        core = f.core
        if core in cores or len(core) < 3 or len(core) > 13:
            continue
        if made:
            twins += 1
        cores[core] = f
        f.eid = f"FX{len(firms) + 1:04d}"
        f.legal, f.legal_pos = choose_legal(rng, f, era)
        firms.append(f)
    taken = dict(cores)
    for f in firms:
        if rng.random() < 0.5:
            s = make_short(f, taken)
            if s is not None:
                f.short = s
                taken[s] = f
    return firms, twins


def firm_details(rng: Rng, f: Firm, era: str) -> None:
    places = PREFS[f.pref][4][0 if era == "pre" else 1]
    city, towns = rng.choice(places)
    town = rng.choice(towns)
    if town.endswith("通") or rng.random() < 0.3:
        f.address = f"{city}{town}{kanji_trad(rng.randint(1, 8))}丁目{kanji_trad(rng.randint(1, 60))}番地"
    else:
        f.address = f"{city}{town}{kanji_trad(rng.randint(1, 6))}丁目{kanji_trad(rng.randint(1, 40))}番地"
    if rng.random() < 0.25:
        f.address = f"{city}{town}{kanji_trad(rng.randint(1, 300))}番地"
    last = 15 if era == "pre" else 33
    e = rng.wchoice(["明治", "大正", "昭和"], [0.25, 0.35, 0.4])
    y = rng.randint(10, 45) if e == "明治" else (rng.randint(1, 15) if e == "大正" else rng.randint(1, last))
    f.founded = f"{year_text(e, y)}{kanji_trad(rng.randint(1, 12))}月"
    caps = [50_000, 100_000, 200_000, 300_000, 500_000, 1_000_000, 1_500_000, 2_000_000, 3_000_000,
            5_000_000, 10_000_000, 20_000_000, 30_000_000, 50_000_000, 100_000_000]
    if f.legal in ("合名会社", "合資会社", None, "有限会社"):
        f.capital = rng.choice(caps[:6])
    else:
        f.capital = rng.choice(caps[2:])
    fam = rng.choice(FAMILY)
    if f.parts[0] in FAMILY:
        fam = f.parts[0]
    name = fam + rng.choice(GIVEN)
    if f.legal == "株式会社":
        t = rng.wchoice(["社長", "取締役社長", "代表取締役"], [0.5, 0.3, 0.2])
    elif f.legal in ("合資会社", "合名会社"):
        t = rng.choice(["代表社員", "無限責任社員"])
    elif f.legal == "有限会社":
        t = rng.choice(["取締役", "代表取締役"])
    else:
        t = "店主"
    f.officers = [(t, name)]
    if f.legal == "株式会社" and rng.random() < 0.6:
        f.officers.append((rng.choice(["専務", "常務", "支配人"]), rng.choice(FAMILY) + rng.choice(GIVEN)))
    lines = INDUSTRIES[f.industry][0]
    f.lines = rng.sample(lines, min(len(lines), rng.randint(1, 3)))


# --------------------------------------------------------------------------------------------
# Printed variants of a firm name
# --------------------------------------------------------------------------------------------


class Forms:
    def __init__(self, fonts: FontSet) -> None:
        self.n2o = {}
        self.o2n = {}
        for p in OLD_FORMS_PAIRS:
            n, o = p[0], p[1]
            if n != o and fonts.covered(n) and fonts.covered(o) and n not in self.n2o and o not in self.o2n:
                self.n2o[n] = o
                self.o2n[o] = n


def to_old(text: str, volmap: dict, rng: Rng, flip: float) -> str:
    out = []
    for c in text:
        if c in volmap:
            use_old = volmap[c]
            if rng.random() < flip:
                use_old = not use_old
            out.append(volmap.get("__old__" + c) if use_old else c)
        else:
            out.append(c)
    return "".join(out)


def make_volmap(forms: Forms, rng: Rng, p_old: float) -> dict:
    vm = {}
    for n in forms.n2o:  # dict order = table order: deterministic
        vm[n] = rng.random() < p_old
        vm["__old__" + n] = forms.n2o[n]
    return vm


LEGAL_ABBR = {  # page abbreviation style -> legal form -> printed abbreviation
    "wide": {"株式会社": "（株）", "合資会社": "（資）", "合名会社": "（名）", "有限会社": "（有）"},
    "half": {"株式会社": "(株)", "合資会社": "(資)", "合名会社": "(名)", "有限会社": "(有)"},
    "circ": {"株式会社": "㈱", "合資会社": "㈾", "合名会社": "㈴", "有限会社": "㈲"},
}


def directory_name(f: Firm, volmap: dict, rng: Rng) -> str:
    s = f.core
    if f.legal:
        s = f.legal + s if f.legal_pos == "pre" else s + f.legal
    return to_old(s, volmap, rng, 0.04)


def list_name(f: Firm, rng: Rng, page_style: dict, title: bool = False) -> str:
    core = f.core
    if not title and f.short and rng.random() < 0.12:
        core = f.short
        legal_txt, pos = "", f.legal_pos
    elif f.legal is None:
        legal_txt, pos = "", "post"
    else:
        r = rng.random()
        if title:
            probs = (0.55, 0.35)  # full, abbreviated, else dropped
        elif f.legal == "株式会社":
            probs = (0.15, 0.5)
        else:
            probs = (0.3, 0.45)
        if r < probs[0]:
            legal_txt = f.legal
            pos = f.legal_pos
        elif r < probs[0] + probs[1]:
            legal_txt = LEGAL_ABBR[page_style["abbr"]][f.legal]
            pos = f.legal_pos if rng.random() < 0.8 else ("post" if f.legal_pos == "pre" else "pre")
        else:
            legal_txt, pos = "", f.legal_pos
    s = legal_txt + core if pos == "pre" else core + legal_txt
    return to_old(s, page_style["volmap"], rng, 0.05)


# --------------------------------------------------------------------------------------------
# Firm directory (vertical)
# --------------------------------------------------------------------------------------------


def capital_text(amount: int, rng: Rng, yen: str) -> str:
    if rng.random() < 0.6:
        return kanji_trad(amount) + yen
    return kanji_pos(amount, group=True) + yen


def phone_text(f: Firm, rng: Rng) -> str:
    key = PREFS[f.pref][0]
    num = kanji_pos(rng.randint(100, 9999))
    if key in PHONE_EXCH and rng.random() < 0.6:
        ex = rng.choice(PHONE_EXCH[key])
        if rng.random() < 0.5:
            return f"電話{ex}（{kanji_pos(rng.randint(11, 59))}）{num}"
        return f"電話{ex}{num}番"
    return f"電話本局{num}番"


def entry_lines(f: Firm, branch_pref, firms, rng: Rng, era: str, sp: str):
    """Body lines (new forms) of one directory entry, in print order."""
    yen = "円" if era == "post" else "円"  # converted to 圓 by the old-form map where the volume uses it
    out = []
    if branch_pref is None:
        out.append(rng.wchoice(["所在地", "本店", "本社", "事務所"], [0.4, 0.3, 0.2, 0.1]) + sp + f.address)
    else:
        places = PREFS[branch_pref][4][0 if era == "pre" else 1]
        city, towns = rng.choice(places)
        out.append(rng.choice(["支店", "工場", "出張所"]) + sp + city + rng.choice(towns) +
                   kanji_trad(rng.randint(1, 5)) + "丁目" + kanji_trad(rng.randint(1, 40)) + "番地")
        out.append("本店" + sp + f.address)
    if rng.random() < 0.55:
        out.append(rng.choice(["設立", "創立", "創業"]) + sp + f.founded)
    cap = "資本金" + sp + capital_text(f.capital, rng, yen)
    if f.legal == "株式会社" and rng.random() < 0.35:
        cap += sp + "払込" + capital_text(f.capital // rng.choice([2, 4, 1]), rng, yen)
    if f.legal is not None or rng.random() < 0.3:
        out.append(cap)
    off = sp.join(t + sp + n for t, n in f.officers)
    out.append(off)
    if rng.random() < 0.3:
        out.append(rng.choice(["取締役", "監査役"]) + sp + "、".join(rng.choice(FAMILY) + rng.choice(GIVEN)
                                                                for _ in range(rng.randint(2, 3))))
    out.append(rng.choice(["営業種目", "営業", "種目", "業務"]) + sp + "、".join(f.lines))
    if rng.random() < 0.2:
        out.append("職工" + sp + kanji_trad(rng.choice([30, 50, 80, 120, 200, 350, 500, 1200])) + "名")
    if rng.random() < 0.22:
        others = rng.sample(firms, 2)
        out.append(rng.choice(["取引先", "主ナル取引先", "仕入先"]) + sp + "、".join(o.short or o.core for o in others))
    if rng.random() < 0.3:
        out.append(phone_text(f, rng))
    return out


def wrap_vertical(text: str, cap_first: int, cap_next: int):
    pieces = []
    cap = cap_first
    while text:
        if len(text) <= cap:
            pieces.append(text)
            break
        cut = cap - 1 if len(text) == cap + 1 and cap > 3 else cap  # no one-character orphan column
        # keep 、 。 off the top of a column (kinsoku)
        while cut > 1 and text[cut] in "、。）":
            cut -= 1
        pieces.append(text[:cut])
        text = text[cut:]
        cap = cap_next
    return pieces


class DirStyle:
    def __init__(self, rng: Rng, fonts: FontSet, W: int, H: int) -> None:
        self.W, self.H = W, H
        nf = len(fonts.specs)
        self.body_font = rng.randint(0, nf - 1)
        self.name_font = self.body_font if rng.random() < 0.5 else rng.randint(0, nf - 1)
        self.name_bold = rng.random() < 0.45
        self.ns = rng.randint(28, 36)
        self.bs = rng.randint(20, 26)
        self.lead = rng.uniform(0.22, 0.45)
        self.entry_gap = rng.uniform(0.5, 1.3) * self.bs
        self.track = rng.uniform(0.0, 0.06)
        self.ntiers = int(rng.wchoice([2, 3, 4], [0.25, 0.6, 0.15]))
        self.mt = rng.randint(160, 220)
        self.mb = rng.randint(120, 180)
        self.ml = rng.randint(110, 160)
        self.mr = rng.randint(110, 160)
        self.tier_gap = rng.randint(45, 75)
        self.tier_rule = rng.random() < 0.7
        self.entry_rule = rng.random() < 0.3
        self.frame = rng.random() < 0.3
        self.runhead = rng.random() < 0.65
        self.body_indent = rng.choice([0, 1, 1, 2])
        self.pack = rng.uniform(0.3, 0.8)
        self.sp = "\u3000" if rng.random() < 0.8 else ""
        tier_h = (H - self.mt - self.mb - (self.ntiers - 1) * self.tier_gap) / self.ntiers
        self.tiers = [(self.mt + i * (tier_h + self.tier_gap), self.mt + i * (tier_h + self.tier_gap) + tier_h)
                      for i in range(self.ntiers)]
        self.tier_h = tier_h


def build_directory(out: str, firms, fonts: FontSet, forms: Forms, rng: Rng, era: str, size, volmap):
    pages_dir = os.path.join(out, "firm_directory", "pages")
    os.makedirs(pages_dir, exist_ok=True)
    W, H = size
    # sections: home prefecture of each firm, plus a second entry elsewhere for some
    entries = {i: [] for i in range(len(PREFS))}
    repeats = 0
    for f in firms:
        entries[f.pref].append((f, None))
        if rng.random() < 0.09:
            other = rng.choice([i for i in range(len(PREFS)) if i != f.pref])
            entries[other].append((f, other))
            repeats += 1
    rows = []
    page_no = [0]
    start_page = rng.randint(1, 300)
    state = {"page": None}

    def new_page(section_name: str):
        st = DirStyle(rng, fonts, W, H)
        page = Page(W, H, fonts, rng)
        state.update(page=page, style=st, tier=0, xr=W - st.mr, first_in_tier=True, cols_on_page=0)
        if st.runhead:
            hs = rng.randint(22, 28)
            txt = to_old(section_name, volmap, rng, 0.0)
            w = page.measure_h(txt, hs, st.body_font, 0.3)
            y = st.mt - hs - rng.randint(45, 75)
            r, _ = page.text_h(txt, (W - w) / 2.0, y, hs, st.body_font, track=0.3)
            page.label(txt, "heading", "", r)
            num = kanji_trad(start_page + page_no[0])
            numx = st.ml if page_no[0] % 2 else W - st.mr - page.measure_h(num, hs, st.body_font)
            r, _ = page.text_h(num, numx, y, hs, st.body_font)
            page.label(num, "body", "", r)
            page.rule(st.ml, y + hs + 14, W - st.mr, y + hs + 14, 2, 0.85)
        if st.frame:
            page.rect(st.ml - 25, st.mt - 25, W - st.mr + 25, H - st.mb + 25, 2, 0.85)
        if st.tier_rule:
            for (a, b), (c, d) in zip(st.tiers[:-1], st.tiers[1:]):
                yy = (b + c) / 2.0
                page.rule(st.ml - 10, yy, W - st.mr + 10, yy, 1, 0.8)

    def flush():
        if state["page"] is not None:
            page_no[0] += 1
            stem = f"dir_{page_no[0]:04d}"
            rows.extend(finish_page(state["page"], pages_dir, stem, rng, "dir"))
            state["page"] = None

    def make_columns(kind, payload, st: DirStyle):
        """List of columns: dict(text, size, font, bold, role, eid, top_off, track, gap)."""
        cols = []
        th = st.tier_h
        if kind == "heading":
            txt = payload
            hs = min(st.ns + rng.randint(6, 14), int(th / (len(txt) * 1.5)))
            track = 0.5 if len(txt) * hs * 1.6 < th else 0.0
            length = len(txt) * hs * (1 + track)
            cols.append(dict(text=txt, size=hs, font=st.name_font, bold=True, role="heading", eid="",
                             top_off=max(0.0, (th - length) / 2.0), track=track, gap=st.entry_gap * 1.5,
                             frame=rng.random() < 0.4, after=st.entry_gap * 1.5))
            return cols
        f, branch_pref, name_txt, lines = payload
        ns = st.ns
        if len(name_txt) * ns * (1 + st.track) > th - 4:
            ns = int((th - 4) / (len(name_txt) * (1 + st.track)))
        cols.append(dict(text=name_txt, size=ns, font=st.name_font, bold=st.name_bold, role="entry", eid=f.eid,
                         top_off=0.0, track=st.track, gap=st.entry_gap, frame=False, after=0.0))
        bs = st.bs
        cap_first = int((th - st.body_indent * bs) // (bs * (1 + st.track)))
        cap_next = int((th - 2 * bs) // (bs * (1 + st.track)))
        merged = []
        for ln in lines:
            if merged and len(merged[-1]) + 1 + len(ln) <= cap_first and rng.random() < st.pack:
                merged[-1] = merged[-1] + "\u3000" + ln
            else:
                merged.append(ln)
        for ln in merged:
            for k, piece in enumerate(wrap_vertical(ln, cap_first, cap_next)):
                off = st.body_indent * bs if k == 0 else 2 * bs
                cols.append(dict(text=piece, size=bs, font=st.body_font, bold=False, role="body", eid="",
                                 top_off=off, track=st.track, gap=0.0, frame=False, after=0.0))
        return cols

    def place(cols, dry: bool) -> bool:
        st = state["style"]
        page = state["page"]
        tier, xr, first = state["tier"], state["xr"], state["first_in_tier"]
        plan = []
        for ci, c in enumerate(cols):
            gap = 0.0 if first else c["gap"]
            w = c["size"]
            if xr - gap - w < st.ml:
                tier += 1
                xr = W - st.mr
                first = True
                gap = 0.0
                if tier >= st.ntiers:
                    return False
            xr -= gap
            plan.append((c, tier, xr - w / 2.0, gap, xr + gap / 2.0))
            xr -= w * (1 + st.lead) + c["after"]
            first = False
        if dry:
            return True
        for c, t, xc, gap, rule_x in plan:
            ytop = st.tiers[t][0] + c["top_off"]
            r, yend = page.text_v(c["text"], xc, ytop, c["size"], c["font"], c["bold"], c["track"])
            page.label(c["text"].strip("\u3000"), c["role"], c["eid"], r)
            if c["frame"] and r:
                pad = c["size"] * 0.45
                page.rect(xc - c["size"] / 2 - pad, ytop - pad, xc + c["size"] / 2 + pad,
                          ytop + len(c["text"]) * c["size"] * (1 + c["track"]) + pad, 1, 0.8)
            if st.entry_rule and c["role"] == "entry" and gap > 0:
                page.rule(rule_x, st.tiers[t][0], rule_x, st.tiers[t][1], 1, 0.7)
        state["tier"], state["xr"], state["first_in_tier"] = tier, xr, False
        return True

    for si, (key, heads, _, _, _) in enumerate(PREFS):
        ents = entries[si]
        if not ents:
            continue
        ents = rng.shuffle(ents)
        head_base = heads[0 if era == "pre" else 1]
        head_txt = to_old(head_base + ("之部" if rng.random() < 0.7 else ""), volmap, rng, 0.0)
        need_head = True
        for f, branch_pref in ents:
            for attempt in range(3):
                if state["page"] is None:
                    new_page(head_base)
                st = state["style"]
                name_txt = directory_name(f, volmap, rng)
                lines = [to_old(x, volmap, rng, 0.03) for x in entry_lines(f, branch_pref, firms, rng, era, st.sp)]
                cols = make_columns("entry", (f, branch_pref, name_txt, lines), st)
                if need_head:
                    cols = make_columns("heading", head_txt, st) + cols
                if place(cols, dry=True):
                    place(cols, dry=False)
                    need_head = False
                    break
                flush()
            else:
                raise RuntimeError("entry does not fit on an empty page")
    flush()
    return rows, page_no[0], repeats


# --------------------------------------------------------------------------------------------
# Supplier lists (horizontal)
# --------------------------------------------------------------------------------------------

SUP_HEADS = ["主要仕入先", "仕入先", "主ナル仕入先", "原料仕入先", "購入先"]
CUS_HEADS = ["主要販売先", "販売先", "得意先", "主要得意先", "納入先"]
HEAD_DECOR = [("", ""), ("【", "】"), ("◎", ""), ("［", "］"), ("■", ""), ("〔", "〕")]


def build_lists(out: str, firms, fonts: FontSet, forms: Forms, rng: Rng, size, n_pages: int, era_year: int):
    pages_dir = os.path.join(out, "supplier_lists", "pages")
    os.makedirs(pages_dir, exist_ok=True)
    W, H = size
    pool = [f for f in firms if f.in_lists]
    reporters = rng.sample(pool, min(n_pages, len(pool)))
    rows = []
    nf = len(fonts.specs)
    list_volmap = make_volmap(forms, rng, 0.0)
    for pi, rep in enumerate(reporters):
        page = Page(W, H, fonts, rng)
        fi = rng.randint(0, nf - 1)
        ps = {"abbr": rng.wchoice(["wide", "circ", "half"], [0.55, 0.25, 0.2]), "volmap": list_volmap}
        ml, mr = rng.randint(130, 200), rng.randint(130, 200)
        y = rng.randint(150, 230)
        # title
        ts = rng.randint(46, 62)
        title = list_name(rep, rng, ps, title=True)
        tw = page.measure_h(title, ts, fi, 0.05)
        tx = (W - tw) / 2.0 if rng.random() < 0.6 else ml
        r, _ = page.text_h(title, tx, y, ts, fi, bold=rng.random() < 0.5, track=0.05)
        page.label(title, "title", rep.eid, r)
        y += ts * 1.5
        if rng.random() < 0.4:
            page.rule(ml, y, W - mr, y, 2, 0.85)
            y += 20
        bs = rng.randint(22, 26)
        if rng.random() < 0.55:
            city, towns = rng.choice(PREFS[rep.pref][4][1])
            txt = f"所在地　{city}{rng.choice(towns)}{rng.randint(1, 6)}の{rng.randint(1, 40)}"
            r, _ = page.text_h(txt, ml, y, bs, fi)
            page.label(txt, "body", "", r)
            y += bs * 1.7
        for lab, val in (("代表者", lambda: rng.choice(["取締役社長", "代表取締役", "社長", "代表社員"]) + "　" +
                          rep.officers[0][1]),
                         ("設　立", lambda: f"{1926 + rng.randint(0, 30)}年{rng.randint(1, 12)}月"),
                         ("従業員", lambda: f"{rng.randint(12, 2400):,}名"),
                         ("主要製品", lambda: "、".join(INDUSTRIES[rep.industry][0][:rng.randint(1, 3)]))):
            if rng.random() < 0.4:
                txt = lab + "　" + val()
                r, _ = page.text_h(txt, ml, y, bs, fi)
                page.label(txt, "body", "", r)
                y += bs * 1.7
        if rng.random() < 0.45:
            cap = rep.capital
            txt = "資本金　" + (f"{cap // 10000:,}万円" if cap >= 10000 else f"{cap:,}円")
            if rng.random() < 0.5:
                txt += f"　（昭和{era_year - 1925}年{rng.randint(1, 12)}月現在）"
            r, _ = page.text_h(txt, ml, y, bs, fi)
            page.label(txt, "body", "", r)
            y += bs * 1.7
        y += rng.randint(20, 60)
        others = [f for f in pool if f is not rep]
        ks, kc = rng.randint(4, 18), rng.randint(4, 18)
        chosen = rng.sample(others, ks + kc)
        sups, cuss = chosen[:ks], chosen[ks:]
        ns = rng.randint(28, 38)
        lh = ns * rng.uniform(1.6, 2.1)
        hs = rng.randint(ns + 2, ns + 8)
        dec = rng.choice(HEAD_DECOR)
        sh = dec[0] + rng.choice(SUP_HEADS) + dec[1]
        ch = dec[0] + rng.choice(CUS_HEADS) + dec[1]
        sections = [(sh, "supplier", sups), (ch, "customer", cuss)]
        if rng.random() < 0.2:
            sections.reverse()
        style = rng.wchoice(["inline", "runin", "grid", "table", "twocol"], [0.3, 0.2, 0.2, 0.15, 0.15])
        sep = rng.wchoice(["、", "\u3000", "・", "，"], [0.5, 0.25, 0.15, 0.1])
        hbold = rng.random() < 0.5
        right = W - mr

        def names_for(fs):
            return [(list_name(f, rng, ps), f) for f in fs]

        if style in ("inline", "runin"):
            for head, role, fs in sections:
                r, hx = page.text_h(head, ml, y, hs, fi, bold=hbold)
                page.label(head, "heading", "", r)
                if style == "inline":
                    y += lh + (hs - ns)
                    x0 = ml + ns * rng.choice([0, 1, 2])
                    x = x0
                else:
                    x0 = ml + rng.choice([ns, hx - ml + ns * 0.5])
                    x = hx + ns * 0.5
                    y += (hs - ns) * 0.8
                items = names_for(fs)
                for k, (txt, f) in enumerate(items):
                    w = page.measure_h(txt, ns, fi)
                    if x + w > right and x > x0 + 1:
                        y += lh
                        x = x0
                    r, x = page.text_h(txt, x, y, ns, fi)
                    page.label(txt, role, f.eid, r)
                    if k < len(items) - 1:
                        if sep == "\u3000":
                            x += ns * rng.uniform(1.0, 1.6)
                        else:
                            _, x = page.text_h(sep, x, y, ns, fi)
                            if sep != "、":
                                x += ns * 0.2
                y += lh * 1.5
        elif style == "grid":
            for head, role, fs in sections:
                r, _ = page.text_h(head, ml, y, hs, fi, bold=hbold)
                page.label(head, "heading", "", r)
                y += lh + (hs - ns)
                items = names_for(fs)
                ncol = 3
                colw = (right - ml - ns) / ncol
                if max(page.measure_h(t, ns, fi) for t, _ in items) > colw - ns * 0.8:
                    ncol = 2
                    colw = (right - ml - ns) / ncol
                for k, (txt, f) in enumerate(items):
                    c = k % ncol
                    if k and c == 0:
                        y += lh
                    r, _ = page.text_h(txt, ml + ns + c * colw, y, ns, fi)
                    page.label(txt, role, f.eid, r)
                y += lh * 1.6
        elif style == "table":
            sup_items = names_for(sections[0][2])
            cus_items = names_for(sections[1][2])
            nrow = max(len(sup_items), len(cus_items))
            rowh = ns * rng.uniform(1.7, 2.0)
            x_mid = (ml + right) / 2.0
            top = y
            page.rect(ml, top, right, top + rowh * (nrow + 1), 2, 0.9)
            page.rule(x_mid, top, x_mid, top + rowh * (nrow + 1), 1, 0.9)
            for i in range(1, nrow + 1):
                page.rule(ml, top + rowh * i, right, top + rowh * i, 2 if i == 1 else 1, 0.85)
            for col, (head, role, _) in enumerate(sections):
                cx0 = ml if col == 0 else x_mid
                hw = page.measure_h(head, ns, fi)
                r, _ = page.text_h(head, cx0 + (x_mid - ml - hw) / 2.0, top + (rowh - ns) / 2.0, ns, fi, bold=hbold)
                page.label(head, "heading", "", r)
                items = sup_items if col == 0 else cus_items
                for i, (txt, f) in enumerate(items):
                    r, _ = page.text_h(txt, cx0 + ns * 0.6, top + rowh * (i + 1) + (rowh - ns) / 2.0, ns, fi)
                    page.label(txt, role, f.eid, r)
            y = top + rowh * (nrow + 1) + lh
        else:  # twocol
            x_mid = (ml + right) / 2.0
            numbered = rng.random() < 0.3
            top = y
            for col, (head, role, fs) in enumerate(sections):
                cx0 = ml if col == 0 else x_mid + ns
                yy = top
                r, _ = page.text_h(head, cx0, yy, hs, fi, bold=hbold)
                page.label(head, "heading", "", r)
                yy += lh + (hs - ns)
                for k, (txt, f) in enumerate(names_for(fs)):
                    x = cx0 + ns
                    if numbered:
                        _, x = page.text_h(f"{k + 1}.", x, yy, ns, fi)
                        x += ns * 0.4
                    r, _ = page.text_h(txt, x, yy, ns, fi)
                    page.label(txt, role, f.eid, r)
                    yy += lh
            y = top + lh * 20
        if rng.random() < 0.3 and y < H - 200:
            note = rng.choice(["（注）取引額の多い順", "（注）順序不同", "以上"])
            r, _ = page.text_h(note, ml, min(y + lh, H - 160), bs, fi)
            page.label(note, "body", "", r)
        if rng.random() < 0.5:
            num = f"- {pi + 1} -" if rng.random() < 0.5 else str(pi + 1)
            nw = page.measure_h(num, bs, fi)
            r, _ = page.text_h(num, (W - nw) / 2.0, H - rng.randint(90, 130), bs, fi)
            page.label(num, "body", "", r)
        rows.extend(finish_page(page, pages_dir, f"sup_{pi + 1:04d}", rng, "list"))
    return rows, len(reporters)


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

SOURCES_YAML = """sources:
  firm_directory: {role: target, direction: vertical, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}
  supplier_lists: {role: query, direction: horizontal, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}
linkages:
  - {query: supplier_lists, target: firm_directory}
"""


def clean_pages(pages_dir: str, prefix: str) -> None:
    """Remove pages a previous run of this generator left behind (only our own file names)."""
    if os.path.isdir(pages_dir):
        for fn in sorted(os.listdir(pages_dir)):
            if fn.startswith(prefix) and fn.endswith((".png", ".jpg")):
                os.remove(os.path.join(pages_dir, fn))


def write_labels(path: str, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["page", "x0", "y0", "x1", "y1", "text", "entity_id", "role"])
        for r in rows:
            w.writerow(r)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--firms", type=int, default=300)
    a = ap.parse_args(argv)
    if a.firms < 100:
        ap.error("--firms must be at least 100 (a list page names up to 36 partners)")
    cv2.setNumThreads(1)
    rng = Rng(a.seed)
    fonts = FontSet()
    forms = Forms(fonts)
    era = "pre" if rng.random() < 0.6 else "post"
    firms, twins = make_firms(rng, a.firms, era)
    for f in firms:
        firm_details(rng, f, era)
        f.in_lists = rng.random() < 0.85
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sources.yaml"), "w", encoding="utf-8", newline="\n") as fh:
        fh.write(SOURCES_YAML)
    clean_pages(os.path.join(a.out, "firm_directory", "pages"), "dir_")
    clean_pages(os.path.join(a.out, "supplier_lists", "pages"), "sup_")
    volmap = make_volmap(forms, rng, 0.9 if era == "pre" else 0.55)
    dsize = rng.choice([(1700, 2400), (1654, 2339), (1748, 2480)])
    lsize = rng.choice([(1700, 2400), (1654, 2339), (1748, 2480)])
    drows, ndir, repeats = build_directory(a.out, firms, fonts, forms, rng.child(), era, dsize, volmap)
    write_labels(os.path.join(a.out, "firm_directory", "labels.csv"), drows)
    n_pages = max(40, min(80, round(a.firms / 5)))
    list_year = rng.randint(1950, 1962) if era == "pre" else rng.randint(1953, 1964)
    lrows, nlist = build_lists(a.out, firms, fonts, forms, rng.child(), lsize, n_pages, list_year)
    write_labels(os.path.join(a.out, "supplier_lists", "labels.csv"), lrows)
    print(f"era={era} firms={len(firms)} near-identical twins={twins} directory pages={ndir} "
          f"repeated directory entries={repeats} list pages={nlist}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
